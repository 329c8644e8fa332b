"""llama.cpp's log lines, into Python logging."""

from __future__ import annotations

import ctypes
import logging

import llama_cpp.llama_cpp as llama

# llama.cpp logs through one process-wide callback; route it to Python logging. Kept at module level
# because llama.cpp holds only a raw pointer to it. ggml's levels: 1 debug, 2 info, 3 warn, 4 error,
# 5 continues the previous message. Its info level dumps the whole model at every load: debug here.
_LLAMA_LOG_LEVELS = {3: logging.WARNING, 4: logging.ERROR}
_llama_logger = logging.getLogger("llama_cpp")
_last_llama_level = logging.DEBUG


@llama.llama_log_callback
def log_from_llama(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    global _last_llama_level
    python_level = _last_llama_level if level == 5 else _LLAMA_LOG_LEVELS.get(level, logging.DEBUG)
    _last_llama_level = python_level
    message = text.decode("utf-8", errors="replace").rstrip()
    if message and _llama_logger.isEnabledFor(python_level):
        _llama_logger.log(python_level, message)
