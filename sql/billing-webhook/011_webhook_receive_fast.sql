-- billing-webhook slice: one write per event (issue 6, speed).
--
-- billing_webhook_receive now takes a per-event advisory lock, checks for an
-- earlier delivery, applies, and writes the event row once, with its final
-- state (no exception block: no subtransaction, no second row version). When
-- the apply raises, the whole statement rolls back and the service records
-- the event with billing_webhook_record_failure() (processed = false,
-- error_message) before answering 5xx, so Stripe retries.

CREATE OR REPLACE FUNCTION billing_webhook_receive(p_payload text, p_price_creator text,
                                                   p_price_studio text)
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
    was_processed boolean;
    r text;
BEGIN
    IF jsonb_typeof(doc) IS DISTINCT FROM 'object' OR ev_id IS NULL OR ev_type IS NULL
       OR jsonb_typeof(doc -> 'created') IS DISTINCT FROM 'number'
       OR jsonb_typeof(obj) IS DISTINCT FROM 'object'
       OR length(ev_id) > 255 OR length(ev_type) > 100 THEN
        RETURN QUERY SELECT 'malformed'::text, 'not a Stripe event (id, type, created, data.object)'::text;
        RETURN;
    END IF;
    ev_created := floor((doc ->> 'created')::numeric)::bigint;

    -- Deliveries of one event run one after another.
    PERFORM pg_advisory_xact_lock(hashtext('ca_stripe_event'), hashtext(ev_id));
    SELECT w.processed INTO was_processed FROM webhook_events w WHERE w.event_id = ev_id;
    IF was_processed THEN
        RETURN QUERY SELECT 'duplicate'::text, NULL::text;
        RETURN;
    END IF;

    r := billing_apply_event(ev_type, ev_created, obj, p_price_creator, p_price_studio);

    INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,
                                     stripe_customer_id, stripe_object_id, processed,
                                     processed_at, outcome, error_message)
    VALUES (ev_id, ev_type, doc, ev_created, left(billing_json_id(obj -> 'customer'), 255),
            left(obj ->> 'id', 255), r <> 'unlinked',
            CASE WHEN r <> 'unlinked' THEN timezone('UTC', now()) END, r,
            CASE WHEN r = 'unlinked' THEN 'no user known for this customer yet' END)
    ON CONFLICT (event_id) DO UPDATE
       SET processed = EXCLUDED.processed, processed_at = EXCLUDED.processed_at,
           outcome = EXCLUDED.outcome, error_message = EXCLUDED.error_message;
    RETURN QUERY SELECT r, NULL::text;
END
$$;

-- Records an event whose apply failed (the receive statement rolled back):
-- processed = false with the error. An event already processed is left alone.
CREATE FUNCTION billing_webhook_record_failure(p_payload text, p_error text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    doc jsonb := p_payload::jsonb;
    obj jsonb := doc #> '{data,object}';
BEGIN
    IF doc ->> 'id' IS NULL OR doc ->> 'type' IS NULL THEN
        RETURN FALSE;
    END IF;
    INSERT INTO webhook_events AS w (event_id, event_type, payload, event_created,
                                     stripe_customer_id, stripe_object_id, processed, outcome,
                                     error_message)
    VALUES (doc ->> 'id', left(doc ->> 'type', 100), doc,
            CASE WHEN jsonb_typeof(doc -> 'created') = 'number'
                 THEN floor((doc ->> 'created')::numeric)::bigint END,
            left(billing_json_id(obj -> 'customer'), 255), left(obj ->> 'id', 255), FALSE,
            'failed', left(p_error, 1000))
    ON CONFLICT (event_id) DO UPDATE
       SET processed = FALSE, processed_at = NULL, outcome = 'failed',
           error_message = EXCLUDED.error_message
     WHERE NOT w.processed;
    RETURN TRUE;
END
$$;

REVOKE ALL ON FUNCTION billing_webhook_record_failure(text, text) FROM PUBLIC;
