-- Issue 18: a pacer slot in one round trip (imagegen/pacer.py) instead of five (BEGIN, the advisory
-- lock, the slot, the purge, COMMIT): every createTask, recordInfo and Telegram send takes one.
-- The function takes the window's transaction-scoped advisory lock first, then reads and writes
-- rate_slots. It is VOLATILE: in READ COMMITTED each of its statements takes a fresh snapshot, so it
-- sees every slot committed before the lock was granted (one plain SQL statement would read with
-- the snapshot of its own start, from before the lock). Called on its own (autocommit), its
-- transaction, and so the lock, ends when it returns, with the new slot committed.
CREATE OR REPLACE FUNCTION take_rate_slot(p_name text, p_lock bigint, p_count integer, p_spacing float8,
                                          p_max_wait float8, p_keep float8)
RETURNS TABLE (taken boolean, delay float8)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    nth  timestamptz;
    slot timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    SELECT r.at INTO nth FROM rate_slots r WHERE r.name = p_name ORDER BY r.at DESC OFFSET p_count - 1 LIMIT 1;
    slot := greatest(clock_timestamp(), coalesce(nth + make_interval(secs => p_spacing), clock_timestamp()));
    taken := slot <= clock_timestamp() + make_interval(secs => p_max_wait);
    IF taken THEN
        INSERT INTO rate_slots (name, at) VALUES (p_name, slot);
    END IF;
    DELETE FROM rate_slots r WHERE r.name = p_name AND r.at < clock_timestamp() - make_interval(secs => p_keep);
    delay := extract(epoch FROM slot - clock_timestamp());
    RETURN NEXT;
END
$$;
