{#- One failing row when the column holds no non-null value at all. -#}
{% test at_least_one(model, column_name) %}

select count({{ column_name }}) as non_null_values
from {{ model }}
having count({{ column_name }}) = 0

{% endtest %}
