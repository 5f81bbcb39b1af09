-- One row per order item; the mapping groups the items of one order into contents[].
select
    o.order_id,
    o.event_name,
    o.ordered_at,
    o.updated_at,
    o.email,
    o.phone,
    o.total,
    o.currency,
    o.store_id,
    i.sku,
    i.product_name,
    i.unit_price,
    i.qty
from orders as o
join order_items as i on i.order_id = o.order_id
where o.total >= {{ vars.min_total }}
order by i.line_no
