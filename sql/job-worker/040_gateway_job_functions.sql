-- job-worker slice: the two job changes the gateway may ask for (it cannot
-- UPDATE jobs). Both check that p_user_id is the transaction's RLS user
-- (app.user_id, set by the gateway's pool), lock the row, and answer
--   'ok'         changed
--   'not_found'  no such job of this user (another user's id included)
--   'conflict'   the job is in a state that does not allow it
--
-- jobs_retry: failed or cancelled → queued. The error, timings and worker are
-- cleared and retry_count is reset to 0: a retry the user asked for starts
-- with the full automatic retry budget. `attempt` (claim fencing) is kept, so
-- a late write of an earlier claim still loses. Usage counts again when the
-- worker reserves (billing_reserve_usage treats a released reservation afresh).
-- The caller pushes the id to ca:jobs after the commit.
--
-- jobs_cancel: queued → cancelled (completed_at = now). A job a worker has
-- already claimed (processing) cannot be cancelled.

CREATE FUNCTION jobs_retry(p_user_id uuid, p_job_id uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    st text;
BEGIN
    IF p_user_id IS NULL
       OR p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'jobs_retry: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT status INTO st FROM jobs WHERE id = p_job_id AND user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF st NOT IN ('failed', 'cancelled') THEN
        RETURN 'conflict';
    END IF;
    UPDATE jobs
       SET status = 'queued', error_code = NULL, error_message = NULL, started_at = NULL,
           completed_at = NULL, processing_time_ms = NULL, worker_id = NULL,
           lease_expires_at = NULL, comfyui_prompt_id = NULL, retry_count = 0
     WHERE id = p_job_id;
    RETURN 'ok';
END
$$;

CREATE FUNCTION jobs_cancel(p_user_id uuid, p_job_id uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    st text;
BEGIN
    IF p_user_id IS NULL
       OR p_user_id IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'jobs_cancel: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT status INTO st FROM jobs WHERE id = p_job_id AND user_id = p_user_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN 'not_found';
    END IF;
    IF st <> 'queued' THEN
        RETURN 'conflict';
    END IF;
    UPDATE jobs
       SET status = 'cancelled', completed_at = timezone('UTC', now()), lease_expires_at = NULL
     WHERE id = p_job_id;
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION jobs_retry(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobs_cancel(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_retry(uuid, uuid) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION jobs_cancel(uuid, uuid) TO ca_api_gateway;
