-- Issue 18: a request's admission in one round trip (imagegen/jobs.py, admit_job) instead of six
-- (BEGIN, the user's advisory lock, the existing job, the user's counts, the insert, COMMIT): every
-- ratio tap takes one. The same steps in the same order, under the same transaction-scoped lock. It
-- is VOLATILE: in READ COMMITTED each statement takes a fresh snapshot, so the counts see every job
-- of this user committed before the lock was granted (one plain SQL statement would read with the
-- snapshot of its own start). Called on its own (autocommit), its transaction, and so the lock,
-- ends when it returns, with the new row committed. The job comes back as JSON (to_jsonb), not as the
-- table's row type: a client caches a row type's layout, which a later migration of the table would
-- make stale.
CREATE OR REPLACE FUNCTION admit_job(p_lock integer, p_user_key text, p_user_id bigint, p_states text[],
                                     p_window float8, p_max_active integer, p_max_per_minute integer,
                                     p_id text, p_workflow_id text, p_chat_id bigint, p_model text,
                                     p_prompt text, p_aspect_ratio text, p_status_message_id bigint,
                                     p_options jsonb, p_input_files jsonb, p_lang text)
RETURNS TABLE (outcome text, active integer, waits float8[], job jsonb)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    r generation_jobs;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock, hashtext(p_user_key));
    SELECT j.* INTO r FROM generation_jobs j WHERE j.id = p_id;
    IF FOUND THEN
        outcome := 'exists';
        job := to_jsonb(r);
        RETURN NEXT;
        RETURN;
    END IF;
    SELECT count(*) FILTER (WHERE j.state = ANY(p_states) AND j.delivered_at IS NULL
                              AND j.created_at > now() - make_interval(secs => p_window)),
           coalesce(array_agg(extract(epoch FROM j.created_at + interval '60 seconds' - now())
                              ORDER BY j.created_at)
                    FILTER (WHERE j.created_at > now() - interval '60 seconds'), '{}')
      INTO active, waits
      FROM generation_jobs j
     WHERE j.user_id = p_user_id AND j.created_at > now() - make_interval(secs => greatest(p_window, 60));
    IF coalesce(array_length(waits, 1), 0) >= p_max_per_minute THEN
        outcome := 'too_many_recent';
        RETURN NEXT;
        RETURN;
    END IF;
    IF active >= p_max_active THEN
        outcome := 'too_many_active';
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO generation_jobs AS j (id, workflow_id, user_id, chat_id, model, prompt, aspect_ratio,
                                      status_message_id, options, input_files, lang)
    VALUES (p_id, p_workflow_id, p_user_id, p_chat_id, p_model, p_prompt, p_aspect_ratio, p_status_message_id,
            p_options, p_input_files, p_lang)
    ON CONFLICT (id) DO NOTHING
    RETURNING j.* INTO r;
    IF FOUND THEN
        outcome := 'created';
    ELSE  -- inserted meanwhile by create_job (only outside the user lock)
        SELECT j.* INTO r FROM generation_jobs j WHERE j.id = p_id;
        outcome := 'exists';
    END IF;
    job := to_jsonb(r);
    RETURN NEXT;
END
$$;
