-- api-gateway slice: whether a user may get new jobs (issue 15, "the account
-- is the user's"). jobs_create_for_drive_file (job-worker 097) asks this before
-- it creates a job: not for a user who does not exist or whose deletion has
-- begun (users_deletion_begin, 095).
--
-- FOR SHARE makes the answer race-free: it waits for a users_deletion_begin in
-- flight (its UPDATE holds the row) and then reads the mark; a deletion that
-- starts later waits for the caller's transaction, so its jobs_cancel sees the
-- job that transaction made. Row locks need UPDATE privilege on the table,
-- which only its owner has: hence this function instead of a SELECT in the
-- job-worker's own.
CREATE FUNCTION users_accepting_jobs(p_user_id uuid)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    ok boolean;
    prev text := current_setting('app.rls_system', true);
BEGIN
    PERFORM set_config('app.rls_system', 'on', true);
    SELECT TRUE INTO ok FROM users u
     WHERE u.id = p_user_id AND u.deletion_requested_at IS NULL
       FOR SHARE;
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN COALESCE(ok, FALSE);
END
$$;

REVOKE ALL ON FUNCTION users_accepting_jobs(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION users_accepting_jobs(uuid) TO ca_job_worker;
