-- billing-webhook slice: a lean receive path (issue 6, speed).
--
-- The service now checks the event's shape and reads its fields in C (after
-- the signature), so PostgreSQL gets typed parameters instead of digging them
-- out of the JSON again:
--   * types that change nothing but the record (unknown types,
--     trial_will_end) are one INSERT … ON CONFLICT from the service;
--   * subscription, invoice and checkout events call
--     billing_webhook_receive_fields() below. It keeps 011's order (per-event
--     advisory lock, earlier delivery, apply, one write of the row) and adds a
--     fast answer for the common "unlinked" case: when no subscription matches
--     the event's subscription or customer and (for subscription events) the
--     metadata names no user of ours, the outcome is 'unlinked' without going
--     through the apply functions, which would conclude the same thing.
-- Anything the service cannot read plainly still goes through
-- billing_webhook_receive() (011), which stays the reference.
--
-- p_sub: data.object.id for subscription events, the invoice's subscription
-- (parent.subscription_details.subscription, else subscription) for invoice
-- events. p_user_ref: data.object.metadata.user_id (subscription events).

CREATE FUNCTION billing_webhook_receive_fields(p_event_id text, p_type text, p_created bigint,
                                               p_payload text, p_customer text, p_object_id text,
                                               p_sub text, p_user_ref text,
                                               p_price_creator text, p_price_studio text)
RETURNS TABLE(outcome text, detail text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    doc jsonb := p_payload::jsonb;
    was_processed boolean;
    r text;
BEGIN
    -- Deliveries of one event run one after another (same key as 011).
    PERFORM pg_advisory_xact_lock(hashtext('ca_stripe_event'), hashtext(p_event_id));
    SELECT w.processed INTO was_processed FROM webhook_events w WHERE w.event_id = p_event_id;
    IF was_processed THEN
        RETURN QUERY SELECT 'duplicate'::text, NULL::text;
        RETURN;
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

REVOKE ALL ON FUNCTION billing_webhook_receive_fields(text, text, bigint, text, text, text, text,
                                                      text, text, text) FROM PUBLIC;
