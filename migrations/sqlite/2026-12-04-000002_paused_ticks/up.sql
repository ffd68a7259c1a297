-- Ticks a schedule skipped because its plan was paused.
ALTER TABLE schedules ADD COLUMN missed_paused INTEGER NOT NULL DEFAULT 0;
