-- job-worker slice (issue 15, "the account is the user's"): DELETE /api/me.
--
-- jobs_archive has no foreign key to users (archived rows outlive nothing:
-- they are copies), so deleting the users row would leave a deleted user's
-- archived jobs behind. jobs_forget_user deletes them, and the user's live
-- jobs too (the users row's ON DELETE CASCADE would; doing it here first
-- keeps the account deletion one statement that does not depend on the
-- order of the cascades). Called by the api-gateway's users_delete_account
-- in the same transaction as the DELETE of the users row.
--
-- Caller check as jobs_retry/jobs_cancel: the user must be the statement's
-- app.user_id (the gateway's RLS user), so a gateway bug cannot wipe
-- another user's history.
CREATE FUNCTION jobs_forget_user(p_user_id uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n integer;
    m integer;
BEGIN
    IF p_user_id IS NULL
       OR p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'jobs_forget_user: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    DELETE FROM jobs_archive WHERE user_id = p_user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM jobs WHERE user_id = p_user_id;
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n + m;
END
$$;

REVOKE ALL ON FUNCTION jobs_forget_user(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_forget_user(uuid) TO ca_api_gateway;
