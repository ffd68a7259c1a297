-- A queued run may wait for a time before it can be claimed: a step whose next retry is far
-- off parks its run (the lease is given up) until then.
ALTER TABLE runs ADD COLUMN available_at TEXT;
