-- job-worker slice (issue 18, "the codec floor": the fixed cost of a job).
-- The worker read users.share_outputs in a round trip of its own for every
-- job, after the upload (SELECT share_outputs FROM users ...). The claim
-- reads the user's row already (tokens, output folder): it now returns the
-- setting too, as share_link (true: the output gets an "anyone with the link
-- can view" permission, as 'link' did; false for 'private' or no user). The
-- setting is now the one in force when the job was claimed (a change made
-- while a job runs applies from the next job). Same parameters, one more
-- column at the end (a worker of the previous version reads the columns by
-- position and ignores it); the rest of the body is 105's, unchanged. A new
-- result type needs DROP + CREATE.

DROP FUNCTION jobs_worker_claim(uuid, text, int, int);

CREATE FUNCTION jobs_worker_claim(p_job_id uuid, p_worker_id text, p_lease_s integer, p_margin_s integer) RETURNS TABLE(attempt integer, user_id uuid, drive_file_id text, drive_file_name text, drive_folder_id text, preset_name text, prompt_id text, retry_count integer, max_retries integer, workflow text, output_folder text, reservation text, user_found boolean, access_enc text, refresh_enc text, drive_connected boolean, token_fresh boolean, share_link boolean)
    LANGUAGE plpgsql
    SET search_path TO 'public', 'pg_temp'
    AS $$
#variable_conflict use_column
DECLARE
    j jobs%ROWTYPE;
    u users%ROWTYPE;
    now_utc timestamp := timezone('UTC', now());
    behind boolean := false;
    lim int;
BEGIN
    UPDATE jobs SET status = 'processing', attempt = jobs.attempt + 1, worker_id = p_worker_id,
                    started_at = COALESCE(jobs.started_at, now_utc),
                    lease_expires_at = now_utc + make_interval(secs => p_lease_s)
     WHERE jobs.id = p_job_id
       AND ((jobs.status = 'queued' AND jobs.quota_waiting_since IS NULL)
            OR (jobs.status = 'processing' AND jobs.lease_expires_at < now_utc))
    RETURNING * INTO j;
    IF NOT FOUND THEN
        RETURN;
    END IF;

    attempt := j.attempt;
    user_id := j.user_id;
    IF j.user_id IS NOT NULL THEN
        -- Behind an older waiting job of the same user, unless this job
        -- already holds a live reservation (a crashed attempt's).
        behind := EXISTS (SELECT 1 FROM jobs w
                           WHERE w.user_id = j.user_id AND w.quota_waiting_since IS NOT NULL
                             AND (w.created_at, w.id) < (j.created_at, j.id))
                  AND NOT EXISTS (SELECT 1 FROM usage_reservations r
                                   WHERE r.job_id = j.id AND r.state IN ('reserved', 'processed'));
        IF behind THEN
            SELECT q.monthly_limit INTO lim FROM billing_quota_room(j.user_id) q;
            reservation := 'blocked ' || COALESCE(lim, 0);
        ELSE
            SELECT r.outcome || ' ' || COALESCE(r.monthly_limit, 0) INTO reservation
              FROM billing_reserve_usage(j.id, j.user_id) r;
        END IF;
        IF reservation LIKE 'blocked %' THEN
            UPDATE jobs SET status = 'queued', quota_waiting_since = now_utc,
                            lease_expires_at = NULL, worker_id = NULL, started_at = NULL
             WHERE jobs.id = j.id;
            IF NOT behind THEN
                PERFORM billing_release_usage(j.id, false);
            END IF;
            -- HOOK(notices): "photos waiting for quota" for j.user_id goes here,
            -- e.g. notice_raise(j.user_id, 'quota_waiting', <period_start of
            -- billing_quota_room(j.user_id)>::text, {"waiting": <the user's
            -- jobs with quota_waiting_since set>}): once per user and period.
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    SELECT * INTO u FROM users WHERE users.id = j.user_id;
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
    user_found := u.id IS NOT NULL;
    access_enc := u.drive_access_token;
    refresh_enc := u.drive_refresh_token;
    drive_connected := COALESCE(u.drive_connected, false);
    token_fresh := COALESCE(u.drive_token_expires_at > now_utc + make_interval(secs => p_margin_s),
                            false);
    share_link := COALESCE(u.share_outputs = 'link', false);
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION jobs_worker_claim(uuid, text, int, int) FROM PUBLIC;
