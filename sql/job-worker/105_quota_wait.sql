-- job-worker slice (issue 15, "photos held back by the quota are not lost").
--
-- A job whose usage reservation is refused (billing_reserve_usage: 'blocked')
-- used to fail with quota_exceeded, each needing its own retry. Now it WAITS:
-- its status stays 'queued' (the schema's five statuses are kept) and
-- jobs.quota_waiting_since says since when it waits for quota. A waiting job
-- is in no Redis list: the worker acked its item, the re-push recovery skips
-- it (services/job-worker/worker_tasks.c), and the claim refuses it.
-- jobs_quota_release, called by every worker's housekeeping, releases waiting
-- jobs in arrival order (created_at, id) as the plan gives room again (a plan
-- upgrade applied by the billing webhook, a new period), never more than fit;
-- the worker then pushes them to their users' fair-queue lists. A crash
-- between the release's commit and the push loses nothing: a released job is
-- queued and not waiting, so the re-push recovery finds it.

ALTER TABLE jobs ADD COLUMN quota_waiting_since TIMESTAMP,
    -- only a queued job waits: whatever moves a job on clears the mark
    ADD CONSTRAINT jobs_quota_waiting_queued
        CHECK (quota_waiting_since IS NULL OR status = 'queued');
-- jobs_archive keeps jobs' columns (001_jobs.sql); archived jobs never wait.
ALTER TABLE jobs_archive ADD COLUMN quota_waiting_since TIMESTAMP;

-- The release sweep (which users wait, each user's oldest first), the claim's
-- "older job waiting?" look-up and GET /api/jobs?waiting_for=quota (read
-- backwards): all on a partial index that is empty when nothing waits.
CREATE INDEX idx_jobs_quota_waiting ON jobs(user_id, created_at, id)
    WHERE quota_waiting_since IS NOT NULL;
-- The archive side of GET /api/jobs?waiting_for=quota: always empty.
CREATE INDEX idx_jobs_archive_quota_waiting ON jobs_archive(user_id, created_at, id)
    WHERE quota_waiting_since IS NOT NULL;

-- The claim (same signature and columns as 082; the preset look-up, output
-- folder and tokens unchanged). Changes:
--   * a waiting job is not claimable (a stray copy of its id is skipped);
--   * when the reservation is refused ('blocked'), or the user has an older
--     job waiting for quota (arrival order: a new photo does not overtake the
--     waiting ones when room appears between two release sweeps), the job is
--     put to wait in the claim's own transaction: back to 'queued' with
--     quota_waiting_since = now, lease, worker and start cleared, no failure
--     counted, no e-mail; a blocked reservation is released (nothing was
--     counted; billing_release_usage(job, false) moves nothing). The row comes
--     back with reservation 'blocked <limit>' and the worker only acks its
--     queue item. (A worker of before this migration reads 'blocked' as a
--     quota failure, but its fenced failure write finds the job no longer
--     processing and records nothing: the job keeps waiting.)
-- Hook for the "photos waiting for quota" notice (issue 15, notices): at the
-- marked line below, once per user and period (the notice's cause key).
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
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION jobs_worker_claim(uuid, text, int, int) FROM PUBLIC;

-- Releases waiting jobs whose user's plan has room again: per user, the room
-- is billing_quota_room (limit - images counted this period; NULL, no limit,
-- for creator) minus the user's queued jobs that are not waiting and hold no
-- live reservation (released earlier, or new, and not claimed yet: each will
-- take an image when claimed). The oldest `room` waiting jobs (created_at, id)
-- get quota_waiting_since = NULL; at most p_max jobs a call, users with the
-- oldest waiting job first. Returns each released job, a user's in arrival
-- order (push them in the order returned), with its user and the
-- user's subscription tier (the fair queue's tier, as the re-push reads it);
-- the caller pushes them after the commit (queue_push_user). One sweep at a
-- time (a transaction advisory lock; a concurrent call returns nothing), so
-- two workers never release the same room twice. Never past the limit: the
-- claim's reservation decides; a job released into room that a concurrent
-- claim took meanwhile is blocked again at its claim and waits again, in its
-- place (its created_at). Rows locked by a concurrent cancel are skipped.
CREATE FUNCTION jobs_quota_release(p_max int)
RETURNS TABLE(job_id uuid, user_id uuid, tier text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    w record;
    room int;
    pending int;
    user_tier text;
    n int := 0;
    got int;
BEGIN
    IF p_max IS NULL OR p_max < 1 THEN
        RETURN;
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtext('ca_jobs_quota_release')) THEN
        RETURN;
    END IF;
    FOR w IN SELECT q.user_id FROM jobs q
              WHERE q.quota_waiting_since IS NOT NULL AND q.user_id IS NOT NULL
              GROUP BY q.user_id ORDER BY min(q.created_at), q.user_id LOOP
        EXIT WHEN n >= p_max;
        SELECT r.room INTO room FROM billing_quota_room(w.user_id) r;
        IF room IS NOT NULL THEN
            SELECT count(*) INTO pending FROM jobs p
             WHERE p.user_id = w.user_id AND p.status = 'queued'
               AND p.quota_waiting_since IS NULL
               AND NOT EXISTS (SELECT 1 FROM usage_reservations r
                                WHERE r.job_id = p.id AND r.state IN ('reserved', 'processed'));
            room := room - pending;
            CONTINUE WHEN room <= 0;
        END IF;
        user_tier := COALESCE((SELECT s.tier FROM subscriptions s WHERE s.user_id = w.user_id
                                ORDER BY s.created_at DESC LIMIT 1), 'free');
        RETURN QUERY
            WITH pick AS (
                SELECT q.id FROM jobs q
                 WHERE q.user_id = w.user_id AND q.quota_waiting_since IS NOT NULL
                   AND q.status = 'queued'
                 ORDER BY q.created_at, q.id
                 LIMIT LEAST(COALESCE(room, p_max - n), p_max - n)
                   FOR UPDATE SKIP LOCKED),
            released AS (
                UPDATE jobs j SET quota_waiting_since = NULL
                  FROM pick WHERE j.id = pick.id
                RETURNING j.id, j.user_id, j.created_at)
            -- in arrival order (an UPDATE's RETURNING has no order): the
            -- caller pushes them in this order to the user's FIFO
            SELECT r.id, r.user_id, user_tier::text FROM released r ORDER BY r.created_at, r.id;
        GET DIAGNOSTICS got = ROW_COUNT;
        n := n + got;
    END LOOP;
END
$$;

REVOKE ALL ON FUNCTION jobs_quota_release(int) FROM PUBLIC;

-- jobs_cancel (083): a waiting job is queued, so it can be cancelled as
-- before; it stops waiting. Same signature, answers and privileges.
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
       SET status = 'cancelled', completed_at = timezone('UTC', now()), lease_expires_at = NULL,
           quota_waiting_since = NULL
     WHERE id = p_job_id;
    PERFORM billing_release_usage(p_job_id, false);
    RETURN 'ok';
END
$$;

REVOKE ALL ON FUNCTION jobs_cancel(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_cancel(uuid, uuid) TO ca_api_gateway;
