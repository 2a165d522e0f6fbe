-- billing-webhook slice: recording and applying Stripe events (issue 6).
--
-- billing_webhook_receive() records an event (unique event_id) and applies it
-- in the same transaction; an apply failure is caught in a subtransaction so
-- the event row stays with processed = false and its error_message. Ordering:
-- subscriptions.last_event_at holds the `created` time of the last event
-- applied to the row; an older event is recorded but changes nothing. A
-- deleted (ended) subscription never comes back. Runs as ca_billing_webhook.

ALTER TABLE subscriptions
    ADD COLUMN last_event_at BIGINT,                  -- Stripe event.created last applied
    ADD COLUMN stripe_subscription_ended BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN stripe_status VARCHAR(30);             -- Stripe's own status word

ALTER TABLE webhook_events
    ADD COLUMN event_created BIGINT,                  -- Stripe event.created
    ADD COLUMN outcome VARCHAR(20),                   -- applied, stale, ignored, recorded, unlinked, failed
    ADD COLUMN stripe_customer_id VARCHAR(255),       -- for replaying unlinked events
    ADD COLUMN stripe_object_id VARCHAR(255);         -- data.object.id (sub_…, in_…, cs_…)

CREATE INDEX idx_webhook_events_unlinked ON webhook_events(stripe_customer_id)
    WHERE outcome = 'unlinked';

-- The user a Stripe-side reference names, when it is one of ours.
CREATE FUNCTION billing_user_from_ref(p_ref text)
RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    uid uuid;
BEGIN
    IF p_ref IS NULL OR p_ref !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    SELECT id INTO uid FROM users WHERE id = p_ref::uuid;
    RETURN uid;
END
$$;

-- A string field that may be an id or an expanded object.
CREATE FUNCTION billing_json_id(p jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE jsonb_typeof(p) WHEN 'string' THEN p #>> '{}'
                                WHEN 'object' THEN p ->> 'id' END
$$;

CREATE FUNCTION billing_epoch_ts(p jsonb)
RETURNS timestamp
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE WHEN jsonb_typeof(p) = 'number'
                THEN to_timestamp((p #>> '{}')::double precision) AT TIME ZONE 'UTC' END
$$;

-- customer.subscription.created / updated / deleted. Returns the outcome:
-- applied, stale (older than what was applied, or the subscription ended),
-- ignored (about another subscription than the user's live one), unlinked
-- (no user known for it yet).
CREATE FUNCTION billing_apply_subscription(p_created bigint, p_obj jsonb, p_deleted boolean,
                                           p_price_creator text, p_price_studio text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    sub_id text := p_obj ->> 'id';
    cust text := billing_json_id(p_obj -> 'customer');
    item jsonb := p_obj #> '{items,data,0}';
    stripe_st text := COALESCE(p_obj ->> 'status', 'active');
    s subscriptions%ROWTYPE;
    uid uuid;
    mapped text;
    ended boolean;
    price text;
    new_tier text;
    new_limit int;
BEGIN
    IF sub_id IS NULL THEN
        RAISE EXCEPTION 'subscription without id' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO s FROM subscriptions WHERE stripe_subscription_id = sub_id FOR UPDATE;
    IF NOT FOUND AND cust IS NOT NULL THEN
        SELECT * INTO s FROM subscriptions WHERE stripe_customer_id = cust FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        uid := billing_user_from_ref(p_obj #>> '{metadata,user_id}');
        IF uid IS NULL THEN
            RETURN 'unlinked';
        END IF;
        PERFORM billing_ensure_free_subscription(uid);
        SELECT * INTO s FROM subscriptions WHERE user_id = uid FOR UPDATE;
    END IF;

    IF s.last_event_at IS NOT NULL AND p_created < s.last_event_at THEN
        RETURN 'stale';
    END IF;
    ended := p_deleted OR stripe_st IN ('canceled', 'incomplete_expired');
    IF s.stripe_subscription_id = sub_id AND s.stripe_subscription_ended THEN
        RETURN 'stale';  -- a deleted subscription is never resurrected
    END IF;
    IF s.stripe_subscription_id IS NOT NULL AND s.stripe_subscription_id <> sub_id
       AND NOT s.stripe_subscription_ended
       AND (ended OR (s.status IN ('active', 'trialing', 'past_due') AND s.tier <> 'free'
                      AND stripe_st NOT IN ('active', 'trialing'))) THEN
        RETURN 'ignored';  -- another subscription than the user's live one
    END IF;

    mapped := CASE
        WHEN ended THEN 'cancelled'
        WHEN stripe_st IN ('active', 'trialing', 'past_due') THEN stripe_st
        WHEN stripe_st = 'unpaid' THEN 'past_due'
        ELSE stripe_st  -- incomplete, paused: not in good standing (counts as free)
    END;
    price := billing_json_id(item -> 'price');
    new_tier := CASE
        WHEN ended THEN 'free'
        WHEN price IS NOT NULL AND price = p_price_creator THEN 'creator'
        WHEN price IS NOT NULL AND price = p_price_studio THEN 'studio'
        ELSE 'free'
    END;
    new_limit := CASE new_tier WHEN 'creator' THEN 100 WHEN 'studio' THEN 500 ELSE 10 END;

    UPDATE subscriptions
       SET stripe_customer_id = COALESCE(cust, stripe_customer_id),
           stripe_subscription_id = sub_id,
           stripe_subscription_ended = ended,
           stripe_status = left(stripe_st, 30),
           tier = new_tier,
           status = mapped,
           monthly_limit = new_limit,
           current_period_start = COALESCE(billing_epoch_ts(item -> 'current_period_start'),
                                           billing_epoch_ts(p_obj -> 'current_period_start')),
           current_period_end = COALESCE(billing_epoch_ts(item -> 'current_period_end'),
                                         billing_epoch_ts(p_obj -> 'current_period_end')),
           cancel_at_period_end = CASE WHEN ended THEN FALSE
                                       ELSE COALESCE((p_obj ->> 'cancel_at_period_end')::boolean, FALSE) END,
           last_event_at = p_created
     WHERE id = s.id;
    RETURN 'applied';
END
$$;

-- invoice.paid (a past_due subscription is active again) and
-- invoice.payment_failed (past_due).
CREATE FUNCTION billing_apply_invoice(p_created bigint, p_obj jsonb, p_paid boolean)
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
    RETURN 'applied';
END
$$;

-- checkout.session.completed: client_reference_id is our user id; link the
-- customer and the subscription, then replay the events that arrived for them
-- before the link (in `created` order).
CREATE FUNCTION billing_apply_checkout(p_created bigint, p_obj jsonb, p_price_creator text,
                                       p_price_studio text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    uid uuid := billing_user_from_ref(p_obj ->> 'client_reference_id');
    cust text := billing_json_id(p_obj -> 'customer');
    sub_id text := billing_json_id(p_obj -> 'subscription');
    s subscriptions%ROWTYPE;
    ev record;
    r text;
BEGIN
    IF uid IS NULL THEN
        uid := billing_user_from_ref(p_obj #>> '{metadata,user_id}');
    END IF;
    IF uid IS NULL THEN
        RETURN 'ignored';  -- not a session we made for a known user
    END IF;
    PERFORM billing_ensure_free_subscription(uid);
    SELECT * INTO s FROM subscriptions WHERE user_id = uid FOR UPDATE;
    UPDATE subscriptions
       SET stripe_customer_id = COALESCE(cust, stripe_customer_id),
           stripe_subscription_id = CASE
               WHEN sub_id IS NULL THEN stripe_subscription_id
               WHEN stripe_subscription_id IS NULL OR stripe_subscription_ended
                    OR tier = 'free' THEN sub_id
               ELSE stripe_subscription_id END,
           stripe_subscription_ended = CASE
               WHEN sub_id IS NOT NULL AND stripe_subscription_id IS DISTINCT FROM sub_id
                    AND (stripe_subscription_id IS NULL OR stripe_subscription_ended OR tier = 'free')
               THEN FALSE ELSE stripe_subscription_ended END
     WHERE id = s.id;

    FOR ev IN SELECT w.id, w.event_type, w.event_created, w.payload
                FROM webhook_events w
               WHERE w.outcome = 'unlinked'
                 AND ((cust IS NOT NULL AND w.stripe_customer_id = cust)
                      OR (sub_id IS NOT NULL AND w.stripe_object_id = sub_id))
               ORDER BY w.event_created, w.created_at
                 FOR UPDATE LOOP
        r := billing_apply_event(ev.event_type, ev.event_created, ev.payload -> 'data' -> 'object',
                                 p_price_creator, p_price_studio);
        UPDATE webhook_events
           SET outcome = r, processed = (r <> 'unlinked'),
               processed_at = CASE WHEN r <> 'unlinked' THEN timezone('UTC', now()) END,
               error_message = NULL
         WHERE id = ev.id;
    END LOOP;
    RETURN 'applied';
END
$$;

-- Dispatch by type. Unknown types: 'ignored'; recorded-only types: 'recorded'.
CREATE FUNCTION billing_apply_event(p_type text, p_created bigint, p_obj jsonb,
                                    p_price_creator text, p_price_studio text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    CASE p_type
    WHEN 'checkout.session.completed' THEN
        RETURN billing_apply_checkout(p_created, p_obj, p_price_creator, p_price_studio);
    WHEN 'customer.subscription.created', 'customer.subscription.updated' THEN
        RETURN billing_apply_subscription(p_created, p_obj, FALSE, p_price_creator, p_price_studio);
    WHEN 'customer.subscription.deleted' THEN
        RETURN billing_apply_subscription(p_created, p_obj, TRUE, p_price_creator, p_price_studio);
    WHEN 'invoice.paid' THEN
        RETURN billing_apply_invoice(p_created, p_obj, TRUE);
    WHEN 'invoice.payment_failed' THEN
        RETURN billing_apply_invoice(p_created, p_obj, FALSE);
    WHEN 'customer.subscription.trial_will_end' THEN
        RETURN 'recorded';
    ELSE
        RETURN 'ignored';
    END CASE;
END
$$;

-- Records a verified event and applies it, in one transaction. outcome:
--   duplicate  already recorded and processed: nothing changed
--   applied / stale / ignored / recorded / unlinked  recorded (answer 2xx)
--   failed     recorded with processed = false and error_message (answer 5xx)
--   malformed  not a Stripe event (answer 400); nothing recorded
-- A redelivery of a failed or unlinked event is applied again.
CREATE FUNCTION billing_webhook_receive(p_payload text, p_price_creator text, p_price_studio text)
RETURNS TABLE(outcome text, detail text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    doc jsonb := p_payload::jsonb;
    ev_id text := doc ->> 'id';
    ev_type text := doc ->> 'type';
    ev_created bigint;
    obj jsonb := doc #> '{data,object}';
    row_id uuid;
    was_processed boolean;
    r text;
    msg text;
    state text;
BEGIN
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' OR ev_id IS NULL OR ev_type IS NULL
       OR jsonb_typeof(doc -> 'created') IS DISTINCT FROM 'number'
       OR jsonb_typeof(obj) IS DISTINCT FROM 'object'
       OR length(ev_id) > 255 OR length(ev_type) > 100 THEN
        RETURN QUERY SELECT 'malformed'::text, 'not a Stripe event (id, type, created, data.object)'::text;
        RETURN;
    END IF;
    ev_created := floor((doc ->> 'created')::numeric)::bigint;

    INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,
                                     stripe_customer_id, stripe_object_id)
    VALUES (ev_id, ev_type, doc, ev_created, left(billing_json_id(obj -> 'customer'), 255),
            left(obj ->> 'id', 255))
    ON CONFLICT (event_id) DO NOTHING
    RETURNING w.id INTO row_id;
    IF row_id IS NULL THEN
        SELECT w.id, w.processed INTO row_id, was_processed
          FROM webhook_events w WHERE w.event_id = ev_id FOR UPDATE;
        IF was_processed THEN
            RETURN QUERY SELECT 'duplicate'::text, NULL::text;
            RETURN;
        END IF;
    END IF;

    BEGIN
        r := billing_apply_event(ev_type, ev_created, obj, p_price_creator, p_price_studio);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, state = RETURNED_SQLSTATE;
        UPDATE webhook_events w
           SET processed = FALSE, processed_at = NULL, outcome = 'failed',
               error_message = state || ': ' || left(msg, 1000)
         WHERE w.id = row_id;
        RETURN QUERY SELECT 'failed'::text, state || ': ' || left(msg, 200);
        RETURN;
    END;
    UPDATE webhook_events w
       SET processed = (r <> 'unlinked'),
           processed_at = CASE WHEN r <> 'unlinked' THEN timezone('UTC', now()) END,
           outcome = r,
           error_message = CASE WHEN r = 'unlinked' THEN 'no user known for this customer yet' END
     WHERE w.id = row_id;
    RETURN QUERY SELECT r, NULL::text;
END
$$;

REVOKE ALL ON FUNCTION billing_user_from_ref(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_apply_subscription(bigint, jsonb, boolean, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_apply_invoice(bigint, jsonb, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_apply_checkout(bigint, jsonb, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_apply_event(text, bigint, jsonb, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_webhook_receive(text, text, text) FROM PUBLIC;
