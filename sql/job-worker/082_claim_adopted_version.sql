-- job-worker slice: the claim runs the version of someone else's public
-- preset that the job's user adopted (sql/api-gateway/082_preset_versions.sql),
-- not the author's latest graph, and someone else's preset only when the user
-- adopted it (a public name the user never adopted, e.g. one its author
-- freed and another published, is preset_not_found). The user's own presets
-- and the system presets run their current graph. Same signature and
-- columns as 060; only the preset's lookup changed:
--   * the preset's graph: by name, active, the user's own first, then a
--     system preset, then a public one the user adopted, at the adopted
--     version (NULL: none).

CREATE OR REPLACE FUNCTION jobs_worker_claim(p_job_id uuid, p_worker_id text, p_lease_s int, p_margin_s int)
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
    SELECT CASE WHEN p.created_by_user_id IS NULL OR p.created_by_user_id = j.user_id
                THEN p.workflow_json ELSE v.workflow_json END::text INTO workflow
      FROM presets p
      LEFT JOIN preset_adoptions a ON a.preset_id = p.id AND a.user_id = j.user_id
      LEFT JOIN preset_versions v ON v.preset_id = a.preset_id AND v.version = a.version
     WHERE p.name = j.preset_name AND COALESCE(p.is_active, true)
       AND (p.created_by_user_id IS NULL OR p.created_by_user_id = j.user_id
            OR (COALESCE(p.is_public, false) AND a.user_id IS NOT NULL))
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

REVOKE ALL ON FUNCTION jobs_worker_claim(uuid, text, int, int) FROM PUBLIC;
