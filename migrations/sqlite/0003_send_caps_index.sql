-- The claim counts a rep's sends of the day (and to one domain) in the
-- states that use up a daily cap. With the state in the index the count
-- reads the index alone instead of every send row of the day: at 100,000
-- sends a day that was most of the cost of each claim.
DROP INDEX sends_rep_time;
DROP INDEX sends_rep_domain_time;
CREATE INDEX sends_rep_time ON sends (rep, claimed_at, state);
CREATE INDEX sends_rep_domain_time ON sends (rep, recipient_domain, claimed_at, state);
