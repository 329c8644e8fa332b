-- The W3C traceparent of the request that queued a task, so the task's run (worker, launcher) is traced
-- under that request, whichever replica claims it and however long after. Empty when tracing was off.

ALTER TABLE tasks ADD COLUMN trace_context TEXT NOT NULL DEFAULT '';
