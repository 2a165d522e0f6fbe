-- billing-webhook slice (issue 15, "Notices"): usage at 80 % and 100 % of the
-- plan, and a failed payment, raise the user's notice through the job-worker
-- slice's notice_raise (sql/job-worker/100_notices.sql: once per user, kind
-- and cause key, enforced there by a UNIQUE constraint).
--
-- The job-worker slice migrates after this one; billing_notice calls
-- notice_raise only once it exists (a deploy that migrated billing first
-- records no notice instead of failing the reservation or the webhook).

CREATE FUNCTION billing_notice(p_user uuid, p_kind text, p_cause_key text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    IF p_user IS NULL OR to_regprocedure('public.notice_raise(uuid,text,text,jsonb)') IS NULL THEN
        RETURN;
    END IF;
    EXECUTE 'SELECT public.notice_raise($1, $2, $3, $4)' USING p_user, p_kind, p_cause_key, p_data;
END
$$;

-- usage_tracking's images_processed (or the limit) crossed 80 % or 100 % of
-- monthly_limit: usage_80 when the count reaches ceil(0.8 × limit) (only when
-- that is below the limit), usage_100 when it reaches the limit; a limit
-- changed mid-period (a plan change) is a new cause: the key is
-- '<period start>/<limit>', so each period and limit gives each notice once,
-- and a count that falls back (a released reservation) and rises again
-- raises nothing new. Whatever updates the row (billing_reserve_usage today,
-- any later path) is covered.
CREATE FUNCTION billing_usage_notice() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    lim int := NEW.monthly_limit;
    used int := COALESCE(NEW.images_processed, 0);
    old_used int := COALESCE(OLD.images_processed, 0);
    limit_changed boolean := OLD.monthly_limit IS DISTINCT FROM NEW.monthly_limit;
    t80 int;
    d jsonb;
    cause text;
BEGIN
    IF lim IS NULL OR lim <= 0 OR NEW.user_id IS NULL THEN
        RETURN NULL;
    END IF;
    t80 := ceil(lim * 0.8)::int;
    cause := to_char(NEW.month, 'YYYY-MM-DD') || '/' || lim;
    d := jsonb_build_object('period_start', to_char(NEW.month, 'YYYY-MM-DD'),
                            'images_used', used, 'monthly_limit', lim, 'tier', NEW.tier);
    IF used >= lim AND (old_used < lim OR limit_changed) THEN
        PERFORM billing_notice(NEW.user_id, 'usage_100', cause, d);
    ELSIF used >= t80 AND t80 < lim AND (old_used < t80 OR limit_changed) THEN
        PERFORM billing_notice(NEW.user_id, 'usage_80', cause, d);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER usage_tracking_notice AFTER UPDATE OF images_processed, monthly_limit
    ON usage_tracking FOR EACH ROW
    WHEN (NEW.monthly_limit > 0
          AND COALESCE(NEW.images_processed, 0) >= ceil(NEW.monthly_limit * 0.8)
          AND (COALESCE(OLD.images_processed, 0) < NEW.monthly_limit
               OR OLD.monthly_limit IS DISTINCT FROM NEW.monthly_limit))
    EXECUTE FUNCTION billing_usage_notice();

-- invoice.paid / invoice.payment_failed: as in 010, plus the payment_failed
-- notice when a failure is applied (not for a stale, unlinked or ignored
-- event), once per invoice (Stripe sends payment_failed again at each retry
-- of the same invoice).
CREATE OR REPLACE FUNCTION billing_apply_invoice(p_created bigint, p_obj jsonb, p_paid boolean)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    sub_id text := COALESCE(billing_json_id(p_obj #> '{parent,subscription_details,subscription}'),
                            billing_json_id(p_obj -> 'subscription'));
    cust text := billing_json_id(p_obj -> 'customer');
    s subscriptions%ROWTYPE;
BEGIN
    IF sub_id IS NOT NULL THEN
        SELECT * INTO s FROM subscriptions WHERE stripe_subscription_id = sub_id FOR UPDATE;
    END IF;
    IF s.id IS NULL AND cust IS NOT NULL THEN
        SELECT * INTO s FROM subscriptions WHERE stripe_customer_id = cust FOR UPDATE;
    END IF;
    IF s.id IS NULL THEN
        RETURN 'unlinked';
    END IF;
    IF s.last_event_at IS NOT NULL AND p_created < s.last_event_at THEN
        RETURN 'stale';
    END IF;
    IF s.stripe_subscription_ended OR s.stripe_subscription_id IS DISTINCT FROM sub_id
       OR s.status NOT IN ('active', 'trialing', 'past_due') THEN
        RETURN 'ignored';
    END IF;
    UPDATE subscriptions
       SET status = CASE WHEN p_paid THEN
                             CASE WHEN status = 'past_due' THEN 'active' ELSE status END
                         ELSE 'past_due' END,
           stripe_status = CASE WHEN p_paid THEN
                             CASE WHEN status = 'past_due' THEN 'active' ELSE stripe_status END
                         ELSE 'past_due' END,
           last_event_at = p_created
     WHERE id = s.id;
    IF NOT p_paid THEN
        PERFORM billing_notice(s.user_id, 'payment_failed',
                               'invoice:' || left(COALESCE(billing_json_id(p_obj -> 'id'),
                                                           p_created::text), 180),
                               jsonb_strip_nulls(jsonb_build_object(
                                   'invoice_id', left(billing_json_id(p_obj -> 'id'), 255),
                                   'amount_due', CASE WHEN jsonb_typeof(p_obj -> 'amount_due') = 'number'
                                                      THEN p_obj -> 'amount_due' END,
                                   'currency', left(p_obj ->> 'currency', 10),
                                   'tier', s.tier)));
    END IF;
    RETURN 'applied';
END
$$;

REVOKE ALL ON FUNCTION billing_notice(uuid, text, text, jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_usage_notice() FROM PUBLIC;
