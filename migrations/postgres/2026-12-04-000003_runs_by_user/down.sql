DROP INDEX runs_user_created;
