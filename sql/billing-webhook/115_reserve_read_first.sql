-- billing-webhook slice (issue 18, "the codec floor": the fixed cost of a job).
-- Every claim ran billing_reserve_usage, which wrote before it read: an
-- INSERT ... ON CONFLICT DO NOTHING into subscriptions (through
-- billing_ensure_free_subscription) and another into usage_tracking, each
-- planned and executed (a speculative-insertion check, the conflict arbiter)
-- on every job although the rows exist for all but a user's first job of a
-- period. Both now read first and insert only when the row is missing; the
-- insert keeps its ON CONFLICT, so two first claims racing still end with one
-- row each. Nothing else changes: the usage row is still locked (FOR UPDATE)
-- before it is counted, so two claims of one user are counted one after the
-- other and the monthly limit is never passed (tests/integration/
-- test_worker_quota.c, test_billing*.c).

CREATE OR REPLACE FUNCTION billing_ensure_free_subscription(p_user_id uuid) RETURNS uuid
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
    SELECT id INTO sub_id FROM subscriptions WHERE user_id = p_user_id;
    IF FOUND THEN
        RETURN sub_id;
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

CREATE OR REPLACE FUNCTION billing_reserve_usage(p_job_id uuid, p_user_id uuid)
RETURNS TABLE(outcome text, usage_id uuid, images_used integer, monthly_limit integer)
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

    -- the user's subscription; a user without one gets free/10 (written only then)
    SELECT * INTO sub FROM subscriptions s WHERE s.user_id = p_user_id;
    IF NOT FOUND THEN
        PERFORM billing_ensure_free_subscription(p_user_id);
        SELECT * INTO sub FROM subscriptions s WHERE s.user_id = p_user_id;
    END IF;

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

    -- the period's usage row, locked: claims of one user count one at a time;
    -- created only when the period has none yet
    SELECT * INTO usage FROM usage_tracking u
     WHERE u.user_id = p_user_id AND u.month = period
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO usage_tracking (user_id, month, tier, monthly_limit)
        VALUES (p_user_id, period, plan_tier, plan_limit)
        ON CONFLICT ON CONSTRAINT usage_tracking_user_id_month_key DO NOTHING;
        SELECT * INTO usage FROM usage_tracking u
         WHERE u.user_id = p_user_id AND u.month = period
           FOR UPDATE;
    END IF;

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
