{#-
    Fails (or warns, with `severity: warn`) with the model's row count when it has any row:
    for models that hold what should not exist, such as fct_orphaned_listens.
-#}
{% test has_no_rows(model) %}

select * from {{ model }}

{% endtest %}
