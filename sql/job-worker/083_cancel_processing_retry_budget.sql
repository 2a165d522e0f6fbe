-- job-worker slice (issue 14): cancel reaches a processing job, and a user's
-- retry no longer refills the automatic retry budget. Replaces the two
-- functions of 040 (same signatures, answers and privileges).
--
-- jobs_cancel: queued or processing → cancelled (completed_at = now, lease
-- cleared), and in the same transaction the job's usage reservation, if any,
-- is released without counting a failure (billing_release_usage(job, false):
-- a cancelled image is never charged; NULL when the job never reserved, and a
-- processed job is never undone, but a completed job cannot be cancelled).
-- A processing job's worker sees the cancel within about 250 ms (its cancel
-- watch, services/job-worker/worker.c), stops the pipeline mid-computation
-- (or interrupts the ComfyUI prompt), uploads nothing and records nothing:
-- its fenced writes (WHERE status = 'processing' AND attempt = ...) lose.
--
-- jobs_retry: failed or cancelled → queued, the error, timings and worker
-- cleared as before, but retry_count is KEPT: max_retries is the job's
-- lifetime budget of automatic retries (transient failures and expired
-- leases, i.e. crashes of its worker, both count). A job that keeps failing
-- (a file that kills or times out its worker on every try) gets exactly one
-- more run per retry its user asks for, not max_retries + 1 more. Permanent
-- failures (image_too_large, unsupported_image, timeout of the CPU budget,
-- ...) were never retried automatically and still are not.

CREATE OR REPLACE FUNCTION jobs_retry(p_user_id uuid, p_job_id uuid)
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
           lease_expires_at = NULL, comfyui_prompt_id = NULL
     WHERE id = p_job_id;
    RETURN 'ok';
END
$$;

CREATE OR REPLACE FUNCTION jobs_cancel(p_user_id uuid, p_job_id uuid)
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
    IF st NOT IN ('queued', 'processing') THEN
        RETURN 'conflict';
    END IF;
    UPDATE jobs
       SET status = 'cancelled', completed_at = timezone('UTC', now()), lease_expires_at = NULL
     WHERE id = p_job_id;
    PERFORM billing_release_usage(p_job_id, false);
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION jobs_retry(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobs_cancel(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_retry(uuid, uuid) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION jobs_cancel(uuid, uuid) TO ca_api_gateway;
