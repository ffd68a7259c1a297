ALTER TABLE runs DROP COLUMN available_at;
