-- job-worker slice (issue 15, "Notices"): in-app notices, each once per cause,
-- and their e-mails through email_outbox.
--
-- A notice is (user, kind, cause_key): the UNIQUE constraint notices_once is
-- the once-per-cause rule, whoever raises it and however often. The kinds and
-- their cause keys (docs/job-worker.md, "Notices"):
--   usage_80, usage_100  usage_tracking crossed 80 % / 100 % of the limit;
--                        key '<period start>/<monthly limit>' (billing's
--                        trigger, sql/billing-webhook/110)
--   quota_waiting        photos wait for quota; key chosen by the caller
--                        (e.g. the period start)
--   drive_revoked        polling stopped: Google access revoked or no tokens;
--   folder_gone          polling stopped: the watched folder is gone; key
--                        'watch:<drive_polls id>:<stop time>' (the poller's
--                        trigger, sql/drive-poller/100)
--   payment_failed       invoice.payment_failed applied; key 'invoice:<id>'
--   jobs_failed          jobs failed for good: one notice per batch (below);
--                        no e-mail of its own (the job digest is that e-mail)
-- notice_raise() is the one way in for the other slices (billing, poller) and
-- for the worker: it records the notice and, when the kind has an e-mail, the
-- user's master switch (users.email_notifications) is on and the kind's
-- category is not in users.email_opt_out, one email_outbox row carrying
-- notice_id (UNIQUE: one e-mail per notice). The e-mail task sends it
-- (services/job-worker/email.c) with the digest's retry and backoff.

CREATE TABLE notices (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind VARCHAR(30) NOT NULL
        CONSTRAINT notices_kind_check
        CHECK (kind IN ('usage_80', 'usage_100', 'quota_waiting', 'drive_revoked', 'folder_gone',
                        'payment_failed', 'jobs_failed')),
    cause_key VARCHAR(200) NOT NULL,
    title TEXT NOT NULL,
    message TEXT NOT NULL,
    data JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
    updated_at TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
    read_at TIMESTAMP,
    CONSTRAINT notices_once UNIQUE (user_id, kind, cause_key)
);
-- GET /api/notifications: unread first, then newest.
CREATE INDEX idx_notices_user_list ON notices (user_id, (read_at IS NOT NULL), created_at DESC, id DESC);

CREATE TRIGGER notices_set_updated_at BEFORE UPDATE ON notices
    FOR EACH ROW EXECUTE FUNCTION jobs_set_updated_at();

-- A notice's e-mail: the digest rows keep job_ids, a notice's row has
-- job_ids '{}' and notice_id.
ALTER TABLE email_outbox
    ADD COLUMN notice_id UUID REFERENCES notices(id) ON DELETE CASCADE,
    ADD CONSTRAINT email_outbox_notice_once UNIQUE (notice_id);

-- The users.email_opt_out category of a kind's e-mail; NULL: no e-mail.
CREATE FUNCTION notice_email_category(p_kind text)
RETURNS text
LANGUAGE sql IMMUTABLE
SET search_path = public, pg_temp
AS $$
    SELECT CASE p_kind
        WHEN 'usage_80' THEN 'usage'
        WHEN 'usage_100' THEN 'usage'
        WHEN 'quota_waiting' THEN 'quota_waiting'
        WHEN 'drive_revoked' THEN 'drive'
        WHEN 'folder_gone' THEN 'drive'
        WHEN 'payment_failed' THEN 'payment'
    END
$$;

-- The title and text of a notice (in-app, and the e-mail's subject and first
-- paragraph; the e-mail adds the link). data's members as notice_raise's
-- callers set them.
CREATE FUNCTION notice_text(p_kind text, p_data jsonb, OUT title text, OUT message text)
LANGUAGE plpgsql IMMUTABLE
SET search_path = public, pg_temp
AS $$
DECLARE
    used text := COALESCE(p_data ->> 'images_used', '?');
    lim text := COALESCE(p_data ->> 'monthly_limit', '?');
    tier text := COALESCE(p_data ->> 'tier', 'current');
    n text := COALESCE(p_data ->> 'count', p_data ->> 'waiting', '1');
BEGIN
    CASE p_kind
    WHEN 'usage_80' THEN
        title := 'You have used 80% of your monthly images';
        message := format('You have processed %s of the %s images your %s plan includes this period.',
                          used, lim, tier);
    WHEN 'usage_100' THEN
        title := 'You have reached your monthly image limit';
        message := format('You have processed %s of the %s images your %s plan includes this period. ',
                          used, lim, tier)
                   || CASE WHEN tier = 'creator'
                           THEN 'Further photos are processed and billed at $0.50 each.'
                           ELSE 'New photos are not processed until the next period starts or you upgrade your plan.'
                      END;
    WHEN 'quota_waiting' THEN
        title := 'Photos are waiting for your monthly limit';
        message := format('%s photo(s) wait because your plan''s monthly limit is reached. '
                          'They are processed by themselves, in order, when the next period starts '
                          'or when you upgrade your plan.', n);
    WHEN 'drive_revoked' THEN
        title := 'Reconnect Google Drive';
        message := 'Creator Automation can no longer reach your Google Drive (the access was '
                   'revoked or has expired), so your folder is no longer watched. Sign in again '
                   'with Google to reconnect, then check your watched folder in the dashboard.';
    WHEN 'folder_gone' THEN
        title := 'Your watched folder is gone';
        message := 'The folder you asked us to watch was deleted, moved to the trash or is no '
                   'longer shared with Creator Automation, so it is no longer watched. Pick a '
                   'folder again in the dashboard.';
    WHEN 'payment_failed' THEN
        title := 'Your payment failed';
        message := format('We could not collect the payment for your %s plan. Please update your '
                          'payment method in the billing portal (Billing in the dashboard).', tier);
    WHEN 'jobs_failed' THEN
        title := format('%s photo(s) could not be processed', n);
        message := format('%s photo(s) failed for good. The job list shows why; you can retry them '
                          'there.', n);
    ELSE
        title := p_kind;
        message := '';
    END CASE;
END
$$;

-- Records the notice (user, kind, cause) once. Returns its id when this call
-- created it, NULL when it existed already (nothing else happens then).
-- With a new notice of a kind that has an e-mail: one email_outbox row when
-- the user's master switch is on and the category is not opted out (read
-- again when the e-mail is sent). Callers: the job-worker, billing's
-- triggers and invoice function, the poller's trigger.
CREATE FUNCTION notice_raise(p_user uuid, p_kind text, p_cause_key text, p_data jsonb)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    nid uuid;
    t record;
    cat text;
    d jsonb := COALESCE(p_data, '{}'::jsonb);
BEGIN
    IF p_user IS NULL OR p_kind IS NULL OR p_cause_key IS NULL OR p_cause_key = '' THEN
        RAISE EXCEPTION 'notice_raise: user, kind and cause key are required'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF length(p_cause_key) > 200 OR jsonb_typeof(d) <> 'object' OR length(d::text) > 8000 THEN
        RAISE EXCEPTION 'notice_raise: cause key over 200 characters or data not a small object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    t := notice_text(p_kind, d);
    INSERT INTO notices (user_id, kind, cause_key, title, message, data)
    VALUES (p_user, p_kind, p_cause_key, t.title, t.message, d)
    ON CONFLICT ON CONSTRAINT notices_once DO NOTHING
    RETURNING id INTO nid;
    IF nid IS NULL THEN
        RETURN NULL;
    END IF;
    cat := notice_email_category(p_kind);
    IF cat IS NOT NULL THEN
        INSERT INTO email_outbox (user_id, job_ids, notice_id)
        SELECT u.id, '{}'::uuid[], nid FROM users u
         WHERE u.id = p_user AND COALESCE(u.email_notifications, true)
           AND NOT (cat = ANY (u.email_opt_out))
        ON CONFLICT ON CONSTRAINT email_outbox_notice_once DO NOTHING;
    END IF;
    RETURN nid;
END
$$;

-- Jobs failed for good: one in-app notice per batch, not one per job. A job
-- that becomes 'failed' joins the user's unread jobs_failed notice of the
-- last 24 hours (count + 1, the first 20 jobs listed in data.jobs), else
-- starts a new one (cause key 'job:<id>:<attempt>'). One advisory lock per
-- user, taken without waiting, makes failures of one user join one batch;
-- when it is busy (two failures of the user committing at that instant) the
-- job starts a notice of its own. No e-mail: the job digest already mails
-- failed jobs.
CREATE FUNCTION notices_job_failed() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n notices%ROWTYPE;
    item jsonb;
    d jsonb;
    t record;
BEGIN
    IF NEW.user_id IS NULL THEN
        RETURN NULL;
    END IF;
    item := jsonb_build_object('job_id', NEW.id, 'file', NEW.drive_file_name,
                               'error_code', NEW.error_code);
    -- Never wait here: the failing transaction may already hold billing's locks
    -- (the lease-requeue task releases the usage before this trigger runs) while
    -- another holds this lock and waits for them. Busy: this job starts a
    -- notice of its own (a second batch, not a deadlock).
    IF NOT pg_try_advisory_xact_lock(hashtext('ca_notice_jobs_failed'),
                                     hashtext(NEW.user_id::text)) THEN
        PERFORM notice_raise(NEW.user_id, 'jobs_failed', 'job:' || NEW.id || ':' || NEW.attempt,
                             jsonb_build_object('count', 1, 'jobs', jsonb_build_array(item)));
        RETURN NULL;
    END IF;
    SELECT * INTO n FROM notices
     WHERE user_id = NEW.user_id AND kind = 'jobs_failed' AND read_at IS NULL
       AND created_at > timezone('UTC', now()) - interval '24 hours'
     ORDER BY created_at DESC LIMIT 1
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM notice_raise(NEW.user_id, 'jobs_failed', 'job:' || NEW.id || ':' || NEW.attempt,
                             jsonb_build_object('count', 1, 'jobs', jsonb_build_array(item)));
        RETURN NULL;
    END IF;
    d := jsonb_set(n.data, '{count}', to_jsonb(COALESCE((n.data ->> 'count')::int, 0) + 1));
    IF jsonb_array_length(COALESCE(n.data -> 'jobs', '[]'::jsonb)) < 20 THEN
        d := jsonb_set(d, '{jobs}', COALESCE(n.data -> 'jobs', '[]'::jsonb) || item);
    END IF;
    t := notice_text('jobs_failed', d);
    UPDATE notices SET data = d, title = t.title, message = t.message WHERE id = n.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_failed_notice AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed')
    EXECUTE FUNCTION notices_job_failed();

-- The gateway (as the user): mark one notice read. Returns the notice (no
-- row: not the user's, or no such notice). Caller check as jobs_forget_user.
CREATE FUNCTION notices_mark_read(p_user uuid, p_id uuid)
RETURNS SETOF notices
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_user IS NULL
       OR p_user IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'notices_mark_read: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN QUERY
    UPDATE notices SET read_at = COALESCE(read_at, timezone('UTC', now()))
     WHERE id = p_id AND user_id = p_user
    RETURNING *;
END
$$;

-- Mark every unread notice of the user read; returns how many changed.
CREATE FUNCTION notices_mark_all_read(p_user uuid)
RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    n integer;
BEGIN
    IF p_user IS NULL
       OR p_user IS DISTINCT FROM NULLIF(current_setting('app.user_id', true), '')::uuid THEN
        RAISE EXCEPTION 'notices_mark_all_read: the user must be the transaction''s app.user_id'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    UPDATE notices SET read_at = timezone('UTC', now())
     WHERE user_id = p_user AND read_at IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Row-level security as for the other user tables: the gateway reads its
-- user's notices; the owner (ca_job_worker) bypasses it.
ALTER TABLE notices ENABLE ROW LEVEL SECURITY;
CREATE POLICY notices_gateway ON notices FOR SELECT TO ca_api_gateway
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid
           OR current_setting('app.rls_system', true) = 'on');

GRANT SELECT ON notices TO ca_api_gateway;
REVOKE ALL ON FUNCTION notice_email_category(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION notice_text(text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION notice_raise(uuid, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION notices_job_failed() FROM PUBLIC;
REVOKE ALL ON FUNCTION notices_mark_read(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION notices_mark_all_read(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION notice_raise(uuid, text, text, jsonb)
    TO ca_billing_webhook, ca_drive_poller;
GRANT EXECUTE ON FUNCTION notices_mark_read(uuid, uuid) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION notices_mark_all_read(uuid) TO ca_api_gateway;
