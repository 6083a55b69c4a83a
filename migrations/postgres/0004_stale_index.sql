-- Hygiene flags the leads untouched since a cutoff. Indexing the unflagged
-- leads by their last touch (never touched = 0, the form the query uses)
-- lets it read only those before the cutoff instead of every lead.
CREATE INDEX leads_unflagged_touch ON leads (COALESCE(last_touch_at, 0)) WHERE stale = 0;
