ALTER TABLE schedules DROP COLUMN missed_paused;
