-- job-worker slice: the worker's claim and fenced completion as functions.
-- Each is still one round trip and one commit, as the single statements it
-- replaces were, but PL/pgSQL keeps the plans of its statements for the
-- session: the statements sent as text were planned again on every job
-- (~0.4 ms of PostgreSQL CPU for the claim alone, more than its execution).
-- SECURITY INVOKER: the worker's own privileges, exactly as before.

-- Claims a job: 'queued', or 'processing' with an expired lease (its worker
-- died), becomes 'processing' with attempt + 1 (the fencing token), this
-- worker and a new lease. No row: not claimable. In the same transaction:
--   * the usage reservation (billing_reserve_usage: idempotent per job, so a
--     retried attempt gets its earlier outcome back) as "<outcome> <limit>";
--     an error there rolls the claim back too (the job stays queued);
--   * the preset's graph: by name, active, the user's own first, then a
--     system preset, then a public one (NULL: none);
--   * the output folder: users.output_folder_id when the job comes from the
--     watched folder or none is watched ('' otherwise);
--   * the user's sealed Drive tokens, drive_connected and whether the access
--     token is valid for more than p_margin_s seconds (the worker's token
--     manager then needs no read of its own).
CREATE FUNCTION jobs_worker_claim(p_job_id uuid, p_worker_id text, p_lease_s int, p_margin_s int)
RETURNS TABLE(attempt int, user_id uuid, drive_file_id text, drive_file_name text,
              drive_folder_id text, preset_name text, prompt_id text, retry_count int,
              max_retries int, workflow text, output_folder text, reservation text,
              user_found boolean, access_enc text, refresh_enc text, drive_connected boolean,
              token_fresh boolean)
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    j jobs%ROWTYPE;
    u users%ROWTYPE;
    now_utc timestamp := timezone('UTC', now());
BEGIN
    UPDATE jobs SET status = 'processing', attempt = jobs.attempt + 1, worker_id = p_worker_id,
                    started_at = COALESCE(jobs.started_at, now_utc),
                    lease_expires_at = now_utc + make_interval(secs => p_lease_s)
     WHERE jobs.id = p_job_id
       AND (jobs.status = 'queued'
            OR (jobs.status = 'processing' AND jobs.lease_expires_at < now_utc))
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    SELECT * INTO u FROM users WHERE users.id = j.user_id;

    attempt := j.attempt;
    user_id := j.user_id;
    drive_file_id := j.drive_file_id;
    drive_file_name := j.drive_file_name;
    drive_folder_id := j.drive_folder_id;
    preset_name := j.preset_name;
    prompt_id := COALESCE(j.comfyui_prompt_id, '');
    retry_count := COALESCE(j.retry_count, 0);
    max_retries := COALESCE(j.max_retries, 3);
    SELECT p.workflow_json::text INTO workflow
      FROM presets p
     WHERE p.name = j.preset_name AND COALESCE(p.is_active, true)
       AND (p.created_by_user_id IS NULL OR p.created_by_user_id = j.user_id
            OR COALESCE(p.is_public, false))
     ORDER BY (p.created_by_user_id = j.user_id) DESC NULLS LAST,
              (p.created_by_user_id IS NULL) DESC, p.created_at
     LIMIT 1;
    output_folder := CASE WHEN u.watched_folder_id = j.drive_folder_id OR u.watched_folder_id IS NULL
                          THEN COALESCE(u.output_folder_id, '') END;
    IF j.user_id IS NOT NULL THEN
        SELECT r.outcome || ' ' || COALESCE(r.monthly_limit, 0) INTO reservation
          FROM billing_reserve_usage(j.id, j.user_id) r;
    END IF;
    user_found := u.id IS NOT NULL;
    access_enc := u.drive_access_token;
    refresh_enc := u.drive_refresh_token;
    drive_connected := COALESCE(u.drive_connected, false);
    token_fresh := COALESCE(u.drive_token_expires_at > now_utc + make_interval(secs => p_margin_s),
                            false);
    RETURN NEXT;
END
$$;

-- The fenced completion: the job's row (only while attempt p_attempt holds
-- it), the usage finalised and, with p_mail, the e-mail outbox row. false:
-- fenced out (another attempt took over, or the job was cancelled or already
-- completed), nothing recorded.
CREATE FUNCTION jobs_worker_complete(p_job_id uuid, p_attempt int, p_ms int, p_worker_id text,
                                     p_output_file_id text, p_output_name text,
                                     p_output_url text, p_mail boolean)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
DECLARE
    uid uuid;
BEGIN
    UPDATE jobs SET status = 'completed', completed_at = timezone('UTC', now()),
                    processing_time_ms = p_ms, worker_id = p_worker_id,
                    output_drive_file_id = p_output_file_id, output_file_name = p_output_name,
                    output_url = p_output_url, lease_expires_at = NULL,
                    error_code = NULL, error_message = NULL
     WHERE id = p_job_id AND attempt = p_attempt AND status = 'processing'
    RETURNING user_id INTO uid;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_mail THEN
        INSERT INTO email_outbox (user_id, job_ids)
        SELECT u.id, ARRAY[p_job_id] FROM users u
         WHERE u.id = uid AND COALESCE(u.email_notifications, true);
    END IF;
    PERFORM billing_finalize_usage(p_job_id);
    RETURN true;
END
$$;

REVOKE ALL ON FUNCTION jobs_worker_claim(uuid, text, int, int) FROM PUBLIC;
REVOKE ALL ON FUNCTION jobs_worker_complete(uuid, int, int, text, text, text, text, boolean)
    FROM PUBLIC;
