-- billing-webhook slice: the quota and usage functions (the money path).
--
-- All run as ca_billing_webhook (SECURITY DEFINER), in UTC. Every function that
-- touches a job's reservation first takes a transaction advisory lock on the
-- job id, then (if needed) the usage_tracking row FOR UPDATE: one lock order
-- everywhere, so concurrent calls serialize per user period and never deadlock.
-- Each call is idempotent per job id.

-- Returns the user's subscription id, creating a free subscription when the
-- user has none.
CREATE FUNCTION billing_ensure_free_subscription(p_user_id uuid)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    sub_id uuid;
BEGIN
    IF p_user_id IS NULL THEN
        RAISE EXCEPTION 'user_id is required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    INSERT INTO subscriptions (user_id, tier, status, monthly_limit)
    VALUES (p_user_id, 'free', 'active', 10)
    ON CONFLICT (user_id) DO NOTHING
    RETURNING id INTO sub_id;
    IF sub_id IS NULL THEN
        SELECT id INTO sub_id FROM subscriptions WHERE user_id = p_user_id;
    END IF;
    RETURN sub_id;
END
$$;

-- Counts one image for a job against the user's current period.
--   ok       counted within the limit
--   overage  counted beyond the limit (creator tier only, $0.50 each)
--   blocked  refused: the job must fail with quota_exceeded; nothing counted
-- A job already reserved or processed gets its recorded outcome again without
-- a second count. A job that was released or blocked is evaluated afresh (a
-- retried job counts once more; a blocked job may pass after an upgrade).
-- images_used is the period's images_processed after the call.
CREATE FUNCTION billing_reserve_usage(p_job_id uuid, p_user_id uuid)
RETURNS TABLE(outcome text, usage_id uuid, images_used int, monthly_limit int)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
#variable_conflict use_column
DECLARE
    now_utc timestamp := timezone('UTC', now());
    res usage_reservations%ROWTYPE;
    sub subscriptions%ROWTYPE;
    usage usage_tracking%ROWTYPE;
    plan_tier text;
    plan_limit int;
    period date;
    result text;
BEGIN
    IF p_job_id IS NULL OR p_user_id IS NULL THEN
        RAISE EXCEPTION 'job_id and user_id are required' USING ERRCODE = 'null_value_not_allowed';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('ca_billing_job'), hashtext(p_job_id::text));

    SELECT * INTO res FROM usage_reservations r WHERE r.job_id = p_job_id;
    IF FOUND THEN
        IF res.user_id <> p_user_id THEN
            RAISE EXCEPTION 'job % belongs to another user', p_job_id
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        IF res.state IN ('reserved', 'processed') THEN
            SELECT * INTO usage FROM usage_tracking u WHERE u.id = res.usage_id;
            RETURN QUERY SELECT CASE WHEN res.is_overage THEN 'overage' ELSE 'ok' END,
                                usage.id, usage.images_processed, usage.monthly_limit;
            RETURN;
        END IF;
    END IF;

    PERFORM billing_ensure_free_subscription(p_user_id);
    SELECT * INTO sub FROM subscriptions s WHERE s.user_id = p_user_id;

    -- The plan in force: a subscription that is not in good standing counts as free.
    IF sub.status IN ('active', 'trialing', 'past_due') THEN
        plan_tier := sub.tier;
        plan_limit := sub.monthly_limit;
    ELSE
        plan_tier := 'free';
        plan_limit := 10;
    END IF;

    -- The period: a paid period covering now starts on its own date; otherwise
    -- the calendar month (UTC).
    IF plan_tier <> 'free' AND sub.current_period_start IS NOT NULL
       AND sub.current_period_end IS NOT NULL
       AND sub.current_period_start <= now_utc AND now_utc < sub.current_period_end THEN
        period := sub.current_period_start::date;
    ELSE
        period := date_trunc('month', now_utc)::date;
    END IF;

    INSERT INTO usage_tracking (user_id, month, tier, monthly_limit)
    VALUES (p_user_id, period, plan_tier, plan_limit)
    ON CONFLICT ON CONSTRAINT usage_tracking_user_id_month_key DO NOTHING;

    SELECT * INTO usage FROM usage_tracking u
     WHERE u.user_id = p_user_id AND u.month = period
       FOR UPDATE;

    -- A plan change mid-period takes effect at once.
    IF usage.tier IS DISTINCT FROM plan_tier OR usage.monthly_limit IS DISTINCT FROM plan_limit THEN
        UPDATE usage_tracking u SET tier = plan_tier, monthly_limit = plan_limit
         WHERE u.id = usage.id;
    END IF;

    IF COALESCE(usage.images_processed, 0) < plan_limit THEN
        UPDATE usage_tracking u
           SET images_processed = COALESCE(u.images_processed, 0) + 1
         WHERE u.id = usage.id
        RETURNING * INTO usage;
        result := 'ok';
    ELSIF plan_tier = 'creator' THEN
        UPDATE usage_tracking u
           SET images_processed = COALESCE(u.images_processed, 0) + 1,
               images_overage = COALESCE(u.images_overage, 0) + 1,
               overage_charged_cents = COALESCE(u.overage_charged_cents, 0) + 50
         WHERE u.id = usage.id
        RETURNING * INTO usage;
        result := 'overage';
    ELSE
        result := 'blocked';
    END IF;

    INSERT INTO usage_reservations AS r (job_id, user_id, usage_id, state, is_overage)
    VALUES (p_job_id, p_user_id, usage.id,
            CASE WHEN result = 'blocked' THEN 'blocked' ELSE 'reserved' END,
            result = 'overage')
    ON CONFLICT ON CONSTRAINT usage_reservations_pkey DO UPDATE
       SET usage_id = EXCLUDED.usage_id, state = EXCLUDED.state, is_overage = EXCLUDED.is_overage;

    RETURN QUERY SELECT result, usage.id, COALESCE(usage.images_processed, 0), plan_limit;
END
$$;

-- The job completed: its count stands. An overage job gets exactly one
-- meter_outbox row. Returns the reservation's state after the call
-- ('processed'; 'released' or 'blocked' when there was nothing to finalize;
-- NULL when the job never reserved).
CREATE FUNCTION billing_finalize_usage(p_job_id uuid)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    res usage_reservations%ROWTYPE;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ca_billing_job'), hashtext(p_job_id::text));
    SELECT * INTO res FROM usage_reservations WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF res.state = 'reserved' THEN
        UPDATE usage_reservations SET state = 'processed' WHERE job_id = p_job_id;
        res.state := 'processed';
    END IF;
    IF res.state = 'processed' AND res.is_overage THEN
        INSERT INTO meter_outbox (job_id, user_id, stripe_customer_id)
        VALUES (p_job_id, res.user_id,
                (SELECT stripe_customer_id FROM subscriptions WHERE user_id = res.user_id))
        ON CONFLICT (job_id) DO NOTHING;
    END IF;
    RETURN res.state;
END
$$;

-- The job failed or was cancelled: give its count back (overage counters too)
-- and, when p_count_failed, add one to images_failed. A blocked job can be
-- released too (only images_failed moves). Returns the state after the call
-- ('released'; 'processed' when the job had completed, which is never undone;
-- NULL when the job never reserved).
CREATE FUNCTION billing_release_usage(p_job_id uuid, p_count_failed boolean)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    res usage_reservations%ROWTYPE;
    was_counted boolean;
    overage int;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ca_billing_job'), hashtext(p_job_id::text));
    SELECT * INTO res FROM usage_reservations WHERE job_id = p_job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF res.state NOT IN ('reserved', 'blocked') THEN
        RETURN res.state;
    END IF;
    was_counted := res.state = 'reserved';
    overage := CASE WHEN was_counted AND res.is_overage THEN 1 ELSE 0 END;
    UPDATE usage_tracking u
       SET images_processed = GREATEST(COALESCE(u.images_processed, 0)
                                       - CASE WHEN was_counted THEN 1 ELSE 0 END, 0),
           images_overage = GREATEST(COALESCE(u.images_overage, 0) - overage, 0),
           overage_charged_cents = GREATEST(COALESCE(u.overage_charged_cents, 0) - 50 * overage, 0),
           images_failed = COALESCE(u.images_failed, 0)
                           + CASE WHEN COALESCE(p_count_failed, FALSE) THEN 1 ELSE 0 END
     WHERE u.id = res.usage_id;
    UPDATE usage_reservations SET state = 'released', is_overage = FALSE WHERE job_id = p_job_id;
    RETURN 'released';
END
$$;

REVOKE ALL ON FUNCTION billing_ensure_free_subscription(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_reserve_usage(uuid, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_finalize_usage(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_release_usage(uuid, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing_ensure_free_subscription(uuid) TO ca_api_gateway;
GRANT EXECUTE ON FUNCTION billing_reserve_usage(uuid, uuid) TO ca_job_worker;
GRANT EXECUTE ON FUNCTION billing_finalize_usage(uuid) TO ca_job_worker;
GRANT EXECUTE ON FUNCTION billing_release_usage(uuid, boolean) TO ca_job_worker;
