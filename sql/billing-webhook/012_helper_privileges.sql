-- The JSON helpers of 010 are internal to this slice: pin their search_path
-- and take them away from PUBLIC, like every other function here.
ALTER FUNCTION billing_epoch_ts(jsonb) SET search_path = public, pg_temp;
ALTER FUNCTION billing_json_id(jsonb) SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION billing_epoch_ts(jsonb) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing_json_id(jsonb) FROM PUBLIC;
