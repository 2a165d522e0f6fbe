-- api-gateway slice: admin_analytics (021) reads jobs and jobs_archive through
-- the job-worker slice's jobs_analytics_rows(from, to) (its 070): the gateway's
-- policies on those two tables are now one equality with app.user_id, without
-- the app.rls_system switch (the planner merges it with a statement's
-- `WHERE user_id = $1`; see 070 there). Same results and audit row; the
-- switch still opens users, subscriptions and usage_tracking here.
-- Retention counts a cohort user as retained when their last job (any status)
-- is at or after cohort month + 1 month: the same as "a job at or after".
-- plpgsql: jobs_analytics_rows need not exist when this file runs.
CREATE OR REPLACE FUNCTION admin_analytics(p_kind text, p_from date, p_to date, p_admin uuid,
                                p_actor text, p_ip text)
RETURNS json
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = public, pg_temp
SET TimeZone = 'UTC'
AS $$
DECLARE
    prev text := current_setting('app.rls_system', true);
    t0 timestamp := p_from::timestamp;
    t1 timestamp := (p_to + 1)::timestamp;
    result json;
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_from > p_to THEN
        RAISE EXCEPTION 'from must not be after to' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM set_config('app.rls_system', 'on', true);

    IF p_kind = 'mau' THEN
        WITH j AS (
            SELECT user_id, created_at FROM jobs_analytics_rows(t0, t1)
             WHERE status = 'completed'),
        counts AS (
            SELECT date_trunc('month', created_at) AS month, count(DISTINCT user_id) AS n
              FROM j GROUP BY 1),
        months AS (
            SELECT generate_series(date_trunc('month', t0), date_trunc('month', p_to::timestamp),
                                   interval '1 month') AS month)
        SELECT json_agg(json_build_object('month', to_char(m.month, 'YYYY-MM'),
                                          'active_users', COALESCE(c.n, 0))
                        ORDER BY m.month DESC)
          INTO result
          FROM months m LEFT JOIN counts c ON c.month = m.month;
        result := json_build_object('months', COALESCE(result, '[]'::json));

    ELSIF p_kind = 'retention' THEN
        WITH cohorts AS (
            SELECT id AS user_id, date_trunc('month', created_at) AS cohort_month
              FROM users WHERE created_at >= t0 AND created_at < t1),
        -- a job at or after cohort month + 1 month <=> the user's last job is
        -- (only jobs from the first cohort month + 1 month on can count)
        last_job AS (
            SELECT user_id, max(created_at) AS last_at
              FROM jobs_analytics_rows(date_trunc('month', t0) + interval '1 month', NULL)
             GROUP BY user_id),
        stats AS (
            SELECT c.cohort_month,
                   count(DISTINCT c.user_id) AS cohort_size,
                   count(DISTINCT c.user_id) FILTER (
                       WHERE l.last_at >= c.cohort_month + interval '1 month') AS retained
              FROM cohorts c LEFT JOIN last_job l ON l.user_id = c.user_id
             GROUP BY c.cohort_month),
        months AS (
            SELECT generate_series(date_trunc('month', t0), date_trunc('month', p_to::timestamp),
                                   interval '1 month') AS month)
        SELECT json_agg(json_build_object(
                   'cohort_month', to_char(m.month, 'YYYY-MM'),
                   'cohort_size', COALESCE(s.cohort_size, 0),
                   'retained_month_1', COALESCE(s.retained, 0),
                   'retention_rate', CASE WHEN COALESCE(s.cohort_size, 0) > 0
                                          THEN round(s.retained::numeric / s.cohort_size, 4) END)
                   ORDER BY m.month DESC)
          INTO result
          FROM months m LEFT JOIN stats s ON s.cohort_month = m.month;
        result := json_build_object('cohorts', COALESCE(result, '[]'::json));

    ELSIF p_kind = 'revenue' THEN
        WITH tiers(tier, price, ord) AS (
            VALUES ('free', 0, 1), ('creator', 29, 2), ('studio', 99, 3)),
        subs AS (
            SELECT tier, count(*) AS n FROM subscriptions
             WHERE status = 'active' AND created_at < t1
             GROUP BY tier),
        overage AS (
            SELECT COALESCE(sum(overage_charged_cents), 0) AS cents,
                   COALESCE(sum(images_overage), 0) AS images
              FROM usage_tracking WHERE month >= p_from AND month <= p_to)
        SELECT json_build_object(
                   'tiers', json_agg(json_build_object(
                                'tier', t.tier,
                                'subscribers', COALESCE(s.n, 0),
                                'monthly_revenue', COALESCE(s.n, 0) * t.price)
                            ORDER BY t.ord),
                   'subscribers', sum(COALESCE(s.n, 0)),
                   'total_monthly_revenue', sum(COALESCE(s.n, 0) * t.price),
                   'overage_images', (SELECT images FROM overage),
                   'overage_charged_cents', (SELECT cents FROM overage))
          INTO result
          FROM tiers t LEFT JOIN subs s ON s.tier = t.tier;

    ELSIF p_kind = 'performance' THEN
        WITH j AS (
            SELECT preset_name, processing_time_ms FROM jobs_analytics_rows(t0, t1)
             WHERE status = 'completed'),
        stats AS (
            SELECT preset_name, count(*) AS total_jobs,
                   round(avg(processing_time_ms), 1) AS avg_time_ms,
                   percentile_cont(0.95) WITHIN GROUP (ORDER BY processing_time_ms) AS p95_time_ms
              FROM j GROUP BY preset_name)
        SELECT json_agg(json_build_object('preset_name', preset_name,
                                          'total_jobs', total_jobs,
                                          'avg_time_ms', avg_time_ms,
                                          'p95_time_ms', p95_time_ms)
                        ORDER BY total_jobs DESC, preset_name)
          INTO result
          FROM stats;
        result := json_build_object('presets', COALESCE(result, '[]'::json));

    ELSE
        RAISE EXCEPTION 'unknown analytics kind %', p_kind USING ERRCODE = 'invalid_parameter_value';
    END IF;

    INSERT INTO audit_log (user_id, actor, action, target, details, ip)
    VALUES (p_admin, COALESCE(p_actor, 'admin:' || p_admin), 'admin.read', 'analytics:' || p_kind,
            jsonb_build_object('from', p_from, 'to', p_to),
            CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
    PERFORM set_config('app.rls_system', COALESCE(prev, ''), true);
    RETURN result;
END
$$;

