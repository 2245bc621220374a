-- Attempts that count runs (issue 14). A retry by hand skips one attempt number, so that a late
-- outcome of an attempt from before the retry stays fenced out; `retries` counts those skipped
-- numbers, and the API shows attempts and maxAttempts less them: a job that ran twice says 2.
ALTER TABLE jobs ADD COLUMN retries integer NOT NULL DEFAULT 0;
