-- billing-webhook slice (issue 15, "photos held back by the quota are not
-- lost"). A job refused by billing_reserve_usage (outcome 'blocked') no longer
-- fails: it waits (jobs.quota_waiting_since, sql/job-worker/105) and the
-- job-worker releases the waiting jobs, oldest first, as the user's plan gives
-- room again (jobs_quota_release). The billing side of that is here.
--
-- billing_quota_room(user): the plan in force and the current period exactly
-- as billing_reserve_usage computes them (002: a subscription not in good
-- standing counts as free/10; the period is the paid period covering now,
-- else the calendar month, UTC), and
--   room         how many more images the period takes within the limit:
--                monthly_limit - images_processed (which counts the reserved
--                and the processed images), never below 0; NULL when the plan
--                has no hard limit (creator: beyond the limit is overage, so
--                a creator's job is never blocked)
--   tier         the plan in force (free, creator, studio)
--   monthly_limit, images_used  the figures room comes from
--   period_start the period's first day (usage_tracking.month)
-- A user without a subscription row is free/10 with nothing used. STABLE: it
-- reads only. It creates no usage row: a new period (the month turned, or the
-- paid period renewed) simply has nothing used yet.
--
-- The worker reads which jobs hold a live reservation (state and job id of
-- usage_reservations, nothing else): a queued job without one will take one
-- image of the room when it is claimed, so jobs_quota_release counts it
-- against the room and does not release more than fits.

CREATE FUNCTION billing_quota_room(p_user_id uuid)
RETURNS TABLE(room int, tier text, monthly_limit int, images_used int, period_start date)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    now_utc timestamp := timezone('UTC', now());
    sub subscriptions%ROWTYPE;
    plan_tier text := 'free';
    plan_limit int := 10;
    period date;
    used int;
BEGIN
    SELECT * INTO sub FROM subscriptions s WHERE s.user_id = p_user_id;
    IF FOUND AND sub.status IN ('active', 'trialing', 'past_due') THEN
        plan_tier := sub.tier;
        plan_limit := sub.monthly_limit;
    END IF;
    IF plan_tier <> 'free' AND sub.current_period_start IS NOT NULL
       AND sub.current_period_end IS NOT NULL
       AND sub.current_period_start <= now_utc AND now_utc < sub.current_period_end THEN
        period := sub.current_period_start::date;
    ELSE
        period := date_trunc('month', now_utc)::date;
    END IF;
    SELECT COALESCE(u.images_processed, 0) INTO used
      FROM usage_tracking u WHERE u.user_id = p_user_id AND u.month = period;
    used := COALESCE(used, 0);
    room := CASE WHEN plan_tier = 'creator' THEN NULL ELSE GREATEST(plan_limit - used, 0) END;
    tier := plan_tier;
    monthly_limit := plan_limit;
    images_used := used;
    period_start := period;
    RETURN NEXT;
END
$$;

REVOKE ALL ON FUNCTION billing_quota_room(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing_quota_room(uuid) TO ca_job_worker;

GRANT SELECT (job_id, state) ON usage_reservations TO ca_job_worker;
CREATE POLICY usage_reservations_worker ON usage_reservations FOR SELECT TO ca_job_worker
    USING (true);
