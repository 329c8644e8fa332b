#!/bin/sh
# The image's entry point: the first argument chooses what this container runs.
set -eu
command="${1:-gateway}"
[ "$#" -gt 0 ] && shift
case "$command" in
    gateway|router|inference|rag|auth|executor)
        exec python -m "services.$command" "$@" ;;
    migrate)
        exec goblin migrate "$@" ;;
    smoke)
        exec python -m goblin_tools.deploy_tools smoke "$@" ;;
    goblin)
        exec goblin "$@" ;;
    *)
        echo "goblin-entrypoint: unknown command '$command' (gateway, router, inference, rag, auth, executor, migrate, smoke, goblin)" >&2
        exit 64 ;;
esac
