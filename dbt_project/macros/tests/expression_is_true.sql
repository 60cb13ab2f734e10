{#- Rows for which `expression` is not true (on a column: `<column> <expression>`). -#}
{% test expression_is_true(model, expression, column_name=none) %}

select *
from {{ model }}
where not coalesce(({{ column_name ~ ' ' if column_name }}{{ expression }}), false)

{% endtest %}
