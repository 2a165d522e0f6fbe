-- billing-webhook slice (issue 18, "the codec floor": the fixed cost of a job).
-- billing_finalize_usage runs in every job's completion. It took the per-job
-- advisory lock, read the reservation FOR UPDATE and then updated it: three
-- statements for the one state change 'reserved' -> 'processed'. The common
-- case is now one UPDATE ... WHERE state = 'reserved' RETURNING: the row lock
-- it takes orders it against billing_release_usage (which locks the same row
-- FOR UPDATE before it reads the state) exactly as the advisory lock did, and
-- billing_reserve_usage never writes a reservation it finds 'reserved'. Every
-- other case (no reservation, released, blocked, already processed) takes the
-- previous path unchanged. The overage meter row is written as before.

CREATE OR REPLACE FUNCTION billing_finalize_usage(p_job_id uuid) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    res usage_reservations%ROWTYPE;
BEGIN
    UPDATE usage_reservations SET state = 'processed'
     WHERE job_id = p_job_id AND state = 'reserved'
    RETURNING * INTO res;
    IF NOT FOUND THEN
        PERFORM pg_advisory_xact_lock(hashtext('ca_billing_job'), hashtext(p_job_id::text));
        SELECT * INTO res FROM usage_reservations WHERE job_id = p_job_id FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        IF res.state = 'reserved' THEN
            UPDATE usage_reservations SET state = 'processed' WHERE job_id = p_job_id;
            res.state := 'processed';
        END IF;
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
