-- job-worker slice: the gateway's policies on jobs and jobs_archive become one
-- equality, and the admin analytics read every user's jobs through a function
-- of this slice instead of the app.rls_system switch.
--
-- Why: a policy of the form `user_id = <setting> OR <system switch>` is not a
-- plain equality, so the planner cannot merge it with the statement's own
-- `WHERE user_id = $1`; it multiplies the two selectivities and expects a
-- handful of rows where a user has hundreds. GET /api/jobs then sorted every
-- one of the user's jobs for each page (bitmap scan + sort) instead of reading
-- the first 21 from idx_jobs_user_created. As one equality it joins the
-- statement's equivalence class: the index condition is `user_id = $1`, the
-- policy becomes a one-time filter (`<setting> = $1`), no sort. A query
-- without a WHERE still sees only the transaction's user's rows.
--
-- The switch was used on these two tables only by admin_analytics (api-gateway
-- slice, 060 there), which now calls jobs_analytics_rows: the columns the
-- analytics need (no file names, links or messages), of jobs and jobs_archive,
-- created in [p_from, p_to) (NULL: unbounded). SECURITY DEFINER owned by this
-- slice (the owner is not subject to RLS on these tables), executable by the
-- gateway's role only. Raw SQL as ca_api_gateway can call it, as it could set
-- the switch before; it can no longer read another user's job names or links.

CREATE FUNCTION jobs_analytics_rows(p_from timestamp, p_to timestamp)
RETURNS TABLE (user_id uuid, status varchar, preset_name varchar, processing_time_ms integer,
               created_at timestamp)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
    SELECT j.user_id, j.status, j.preset_name, j.processing_time_ms, j.created_at FROM jobs j
     WHERE (p_from IS NULL OR j.created_at >= p_from) AND (p_to IS NULL OR j.created_at < p_to)
    UNION ALL
    SELECT a.user_id, a.status, a.preset_name, a.processing_time_ms, a.created_at FROM jobs_archive a
     WHERE (p_from IS NULL OR a.created_at >= p_from) AND (p_to IS NULL OR a.created_at < p_to)
$$;
REVOKE ALL ON FUNCTION jobs_analytics_rows(timestamp, timestamp) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION jobs_analytics_rows(timestamp, timestamp) TO ca_api_gateway;

ALTER POLICY jobs_gateway ON jobs
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);
ALTER POLICY jobs_archive_gateway ON jobs_archive
    USING (user_id = NULLIF(current_setting('app.user_id', true), '')::uuid);
