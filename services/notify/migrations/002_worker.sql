-- Which consumer last claimed a delivery ("<hostname>:<pid>:<random>:w<i>",
-- docs/notify.md "Queue design"): with several notify instances side by side
-- it tells which one did the work. NULL until a worker first claims it.
ALTER TABLE delivery ADD COLUMN worker text;
