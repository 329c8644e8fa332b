-- Each event carries an id made where it happens, so an event written again from a service's local
-- journal (after a kill, or after Postgres was away) is stored once: INSERT ... ON CONFLICT DO NOTHING.
-- Rows from before this migration have none (NULLs never conflict).
ALTER TABLE audit_events ADD COLUMN event_id TEXT;
CREATE UNIQUE INDEX idx_audit_events_event_id ON audit_events(event_id);
