-- Lists of a user's runs across plans, newest first.
CREATE INDEX runs_user_created ON runs (user_id, created_at DESC, id DESC);
