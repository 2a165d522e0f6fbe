-- Issue 14 (database): billing-webhook slice hardening.
-- webhook_events holds Stripe's payloads (customers' names, e-mails,
-- addresses): only billing-webhook reads them. 001 granted SELECT to the
-- gateway (nothing of the gateway reads the table).
REVOKE ALL ON webhook_events FROM ca_api_gateway;
REVOKE ALL ON webhook_events FROM PUBLIC;

-- Every SECURITY DEFINER function of this slice pins its search_path to
-- "public, pg_temp": pg_catalog first (implicitly), then public, where no
-- runtime role may CREATE (migrate revokes it), then the session's temporary
-- schema last, so a temporary table or function cannot shadow a real one.
-- Most were created that way; this catches any that was not.
DO $pin$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure
               FROM pg_proc p
              WHERE p.prosecdef AND p.pronamespace = 'public'::regnamespace
                AND p.proowner = current_user::regrole
                AND NOT ('search_path=public, pg_temp' = ANY (COALESCE(p.proconfig, '{}')))
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET search_path = public, pg_temp', f);
    END LOOP;
END
$pin$;
