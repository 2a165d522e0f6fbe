-- job-worker slice: the "photos waiting for quota" notice (issue 15, notices).
-- When a job starts to wait for quota (jobs_worker_claim sets
-- quota_waiting_since, 105), the user gets the quota_waiting notice once per
-- usage period (cause key: the period's first day, from billing_quota_room),
-- with the e-mail when they have not opted out (notice_raise, 100). Later
-- waits of the same period update the count in that notice while it is
-- unread, so the dashboard and an e-mail not yet sent say how many wait.
CREATE FUNCTION notices_quota_waiting() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    period date;
    waiting bigint;
    d jsonb;
    t record;
BEGIN
    IF NEW.user_id IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT r.period_start INTO period FROM billing_quota_room(NEW.user_id) r;
    SELECT count(*) INTO waiting FROM jobs j
     WHERE j.user_id = NEW.user_id AND j.quota_waiting_since IS NOT NULL;
    d := jsonb_build_object('waiting', waiting);
    IF notice_raise(NEW.user_id, 'quota_waiting',
                    COALESCE(period, timezone('UTC', now())::date)::text, d) IS NULL THEN
        t := notice_text('quota_waiting', d);
        UPDATE notices n SET data = n.data || d, title = t.title, message = t.message
         WHERE n.user_id = NEW.user_id AND n.kind = 'quota_waiting'
           AND n.cause_key = COALESCE(period, timezone('UTC', now())::date)::text
           AND n.read_at IS NULL AND n.data IS DISTINCT FROM n.data || d;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_quota_waiting_notice
    AFTER UPDATE OF quota_waiting_since ON jobs
    FOR EACH ROW
    WHEN (OLD.quota_waiting_since IS NULL AND NEW.quota_waiting_since IS NOT NULL)
    EXECUTE FUNCTION notices_quota_waiting();

REVOKE ALL ON FUNCTION notices_quota_waiting() FROM PUBLIC;
