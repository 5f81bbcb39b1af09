-- One row per person: the customers who spent at least {{ vars.min_lifetime_value }}.
-- customer_id (member_id in connector.yml) follows a person across runs; email and phone are hashed
-- before anything leaves, and a person the query no longer returns is removed from the audience.
select
    customer_id,
    email,
    phone
from customers
where lifetime_value >= {{ vars.min_lifetime_value }}
