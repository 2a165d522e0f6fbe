-- billing-webhook slice: an event that arrives while its customer is being
-- linked is never left "unlinked" (issue 6: a plan change is never lost).
--
-- Stripe sends checkout.session.completed and customer.subscription.created
-- for a new subscription at the same moment. Before this file, a subscription
-- event could test "no subscription matches this customer" on a snapshot
-- taken before the checkout committed its link, and commit its row as
-- 'unlinked' after the checkout had replayed the unlinked events: the event
-- was answered 2xx and never applied.
--
-- Now both sides take a transaction advisory lock on the customer id, keyed
-- (hashtext('ca_stripe_customer'), hashtext(customer)):
--   * linking (checkout.session.completed) takes it exclusively before it
--     links and replays;
--   * deciding "unlinked" (subscription and invoice events) takes it shared,
--     in a statement BEFORE the one that tests for a link, so the test runs on
--     a snapshot taken after any link that held the lock has committed.
-- Either the event is recorded first (the checkout waits, then replays it) or
-- the link commits first (the event sees it and is applied). Shared locks do
-- not block each other: concurrent events for one customer still run at once.

CREATE FUNCTION billing_lock_customer(p_customer text, p_exclusive boolean)
RETURNS void
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    IF p_customer IS NULL THEN
        RETURN;
    END IF;
    IF p_exclusive THEN
        PERFORM pg_advisory_xact_lock(hashtext('ca_stripe_customer'), hashtext(p_customer));
    ELSE
        PERFORM pg_advisory_xact_lock_shared(hashtext('ca_stripe_customer'), hashtext(p_customer));
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION billing_apply_event(p_type text, p_created bigint, p_obj jsonb,
                                               p_price_creator text, p_price_studio text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
BEGIN
    CASE p_type
    WHEN 'checkout.session.completed' THEN
        PERFORM billing_lock_customer(billing_json_id(p_obj -> 'customer'), TRUE);
        RETURN billing_apply_checkout(p_created, p_obj, p_price_creator, p_price_studio);
    WHEN 'customer.subscription.created', 'customer.subscription.updated' THEN
        PERFORM billing_lock_customer(billing_json_id(p_obj -> 'customer'), FALSE);
        RETURN billing_apply_subscription(p_created, p_obj, FALSE, p_price_creator, p_price_studio);
    WHEN 'customer.subscription.deleted' THEN
        PERFORM billing_lock_customer(billing_json_id(p_obj -> 'customer'), FALSE);
        RETURN billing_apply_subscription(p_created, p_obj, TRUE, p_price_creator, p_price_studio);
    WHEN 'invoice.paid' THEN
        PERFORM billing_lock_customer(billing_json_id(p_obj -> 'customer'), FALSE);
        RETURN billing_apply_invoice(p_created, p_obj, TRUE);
    WHEN 'invoice.payment_failed' THEN
        PERFORM billing_lock_customer(billing_json_id(p_obj -> 'customer'), FALSE);
        RETURN billing_apply_invoice(p_created, p_obj, FALSE);
    WHEN 'customer.subscription.trial_will_end' THEN
        RETURN 'recorded';
    ELSE
        RETURN 'ignored';
    END CASE;
END
$$;

-- 013's function with the shared customer lock before the "unlinked" test.
CREATE OR REPLACE FUNCTION billing_webhook_receive_fields(p_event_id text, p_type text,
                                                          p_created bigint, p_payload text,
                                                          p_customer text, p_object_id text,
                                                          p_sub text, p_user_ref text,
                                                          p_price_creator text,
                                                          p_price_studio text)
RETURNS TABLE(outcome text, detail text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    doc jsonb := p_payload::jsonb;
    was_processed boolean;
    r text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('ca_stripe_event'), hashtext(p_event_id));
    SELECT w.processed INTO was_processed FROM webhook_events w WHERE w.event_id = p_event_id;
    IF was_processed THEN
        RETURN QUERY SELECT 'duplicate'::text, NULL::text;
        RETURN;
    END IF;

    IF p_type IN ('customer.subscription.created', 'customer.subscription.updated',
                  'customer.subscription.deleted', 'invoice.paid', 'invoice.payment_failed') THEN
        PERFORM billing_lock_customer(p_customer, FALSE);
    END IF;
    IF p_type IN ('customer.subscription.created', 'customer.subscription.updated',
                  'customer.subscription.deleted', 'invoice.paid', 'invoice.payment_failed')
       AND (p_sub IS NOT NULL OR p_type LIKE 'invoice.%')
       AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.stripe_subscription_id = p_sub)
       AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.stripe_customer_id = p_customer)
       AND (p_type LIKE 'invoice.%' OR p_user_ref IS NULL
            OR billing_user_from_ref(p_user_ref) IS NULL) THEN
        r := 'unlinked';
    ELSE
        r := billing_apply_event(p_type, p_created, doc #> '{data,object}', p_price_creator,
                                 p_price_studio);
    END IF;

    INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,
                                     stripe_customer_id, stripe_object_id, processed,
                                     processed_at, outcome, error_message)
    VALUES (p_event_id, p_type, doc, p_created, p_customer, p_object_id, r <> 'unlinked',
            CASE WHEN r <> 'unlinked' THEN timezone('UTC', now()) END, r,
            CASE WHEN r = 'unlinked' THEN 'no user known for this customer yet' END)
    ON CONFLICT (event_id) DO UPDATE
       SET processed = EXCLUDED.processed, processed_at = EXCLUDED.processed_at,
           outcome = EXCLUDED.outcome, error_message = EXCLUDED.error_message;
    RETURN QUERY SELECT r, NULL::text;
END
$$;

-- The service's group commit (webhook.c): a batch of record-only events
-- ('recorded', 'ignored') and possibly-unlinked ones, as a JSON array of
-- {"id", "type", "created", "customer", "object_id", "sub", "user_ref",
-- "outcome", "payload"}. Takes the shared customer locks of the unlinked
-- candidates (sorted), then writes the batch in one INSERT whose "no link"
-- test runs on a snapshot taken after those locks. One row back per event
-- written; an unlinked candidate that is linked by now gets no row (the
-- service then applies it alone).
CREATE FUNCTION billing_webhook_record_batch(p_batch jsonb)
RETURNS TABLE(event_id text, outcome text)
LANGUAGE plpgsql
SET search_path = public, pg_temp
AS $$
BEGIN
    PERFORM billing_lock_customer(c.customer, FALSE)
       FROM (SELECT DISTINCT e.customer
               FROM jsonb_to_recordset(p_batch) AS e(customer text, outcome text)
              WHERE e.outcome = 'unlinked' AND e.customer IS NOT NULL
              ORDER BY 1) c;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,
                                         stripe_customer_id, stripe_object_id, processed,
                                         processed_at, outcome, error_message)
        SELECT e.id, e.type, e.payload, e.created, e.customer, e.object_id,
               e.outcome <> 'unlinked',
               CASE WHEN e.outcome <> 'unlinked' THEN timezone('UTC', now()) END,
               e.outcome,
               CASE WHEN e.outcome = 'unlinked' THEN 'no user known for this customer yet' END
          FROM jsonb_to_recordset(p_batch) AS e(id text, type text, created bigint,
                                                customer text, object_id text, sub text,
                                                user_ref text, outcome text, payload jsonb)
         WHERE e.outcome IN ('recorded', 'ignored')
            OR (e.outcome = 'unlinked'
                AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                 WHERE s.stripe_subscription_id = e.sub)
                AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                 WHERE s.stripe_customer_id = e.customer)
                AND NOT CASE WHEN e.user_ref IS NULL THEN FALSE
                             ELSE billing_user_from_ref(e.user_ref) IS NOT NULL END)
        ON CONFLICT ON CONSTRAINT webhook_events_event_id_key DO UPDATE
           SET processed = EXCLUDED.processed, processed_at = EXCLUDED.processed_at,
               outcome = EXCLUDED.outcome, error_message = EXCLUDED.error_message
         WHERE NOT w.processed
        RETURNING w.event_id::text AS event_id, w.outcome::text AS outcome)
    SELECT ins.event_id, ins.outcome FROM ins;
END
$$;

REVOKE ALL ON FUNCTION billing_lock_customer(text, boolean) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_webhook_record_batch(jsonb) FROM PUBLIC;
