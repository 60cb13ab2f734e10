{#-
    The few SQL spellings that differ between the project's two targets, one dispatched macro
    each (`default__` is Postgres, `spark__` is Spark SQL). Everything else is written once, in
    SQL both speak, or with dbt's own cross-database macros.
-#}

{#- Types: a contract's data types, and the casts of staging. -#}
{% macro type_text() -%}
    {{ return(adapter.dispatch('type_text', 'moovitamix')()) }}
{%- endmacro %}
{% macro default__type_text() -%}text{%- endmacro %}
{% macro spark__type_text() -%}string{%- endmacro %}

{#- A UTC instant: timestamptz on Postgres; Spark's timestamp (the session time zone is UTC). -#}
{% macro type_timestamp_utc() -%}
    {{ return(adapter.dispatch('type_timestamp_utc', 'moovitamix')()) }}
{%- endmacro %}
{% macro default__type_timestamp_utc() -%}timestamptz{%- endmacro %}
{% macro spark__type_timestamp_utc() -%}timestamp{%- endmacro %}

{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double', 'moovitamix')()) }}
{%- endmacro %}
{% macro default__type_double() -%}double precision{%- endmacro %}
{% macro spark__type_double() -%}double{%- endmacro %}

{#- Regular expressions: Postgres' `~` and flag 'g'; Java's (Spark) `rlike`, replace-all. -#}
{% macro regex_matches(expression, pattern) -%}
    {{ return(adapter.dispatch('regex_matches', 'moovitamix')(expression, pattern)) }}
{%- endmacro %}
{% macro default__regex_matches(expression, pattern) -%}
    {{ expression }} ~ {{ pattern }}
{%- endmacro %}
{% macro spark__regex_matches(expression, pattern) -%}
    {{ expression }} rlike {{ pattern }}
{%- endmacro %}

{% macro regex_replace_all(expression, pattern, replacement) -%}
    {{ return(adapter.dispatch('regex_replace_all', 'moovitamix')(expression, pattern, replacement)) }}
{%- endmacro %}
{% macro default__regex_replace_all(expression, pattern, replacement) -%}
    regexp_replace({{ expression }}, {{ pattern }}, {{ replacement }}, 'g')
{%- endmacro %}
{% macro spark__regex_replace_all(expression, pattern, replacement) -%}
    regexp_replace({{ expression }}, {{ pattern }}, {{ replacement }})
{%- endmacro %}

{#- A run of characters that are neither letters nor digits (Java has no [:alnum:]). -#}
{% macro non_alphanumeric_run_pattern() -%}
    {{ return(adapter.dispatch('non_alphanumeric_run_pattern', 'moovitamix')()) }}
{%- endmacro %}
{% macro default__non_alphanumeric_run_pattern() -%}
    '[^[:alnum:]]+'
{%- endmacro %}
{% macro spark__non_alphanumeric_run_pattern() -%}
    '[^\\p{L}\\p{N}]+'
{%- endmacro %}

{#- The values of `expression` in the order of `order_by`, as an array. -#}
{% macro ordered_array_agg(expression, order_by) -%}
    {{ return(adapter.dispatch('ordered_array_agg', 'moovitamix')(expression, order_by)) }}
{%- endmacro %}
{% macro default__ordered_array_agg(expression, order_by) -%}
    array_agg({{ expression }} order by {{ order_by }})
{%- endmacro %}
{% macro spark__ordered_array_agg(expression, order_by) -%}
    transform(
        array_sort(collect_list(struct({{ order_by }} as sort_key, {{ expression }} as element))),
        pair -> pair.element
    )
{%- endmacro %}

{#- The value of `expression` on the row with the smallest `order_by` of the group. -#}
{% macro first_by(expression, order_by) -%}
    {{ return(adapter.dispatch('first_by', 'moovitamix')(expression, order_by)) }}
{%- endmacro %}
{% macro default__first_by(expression, order_by) -%}
    (array_agg({{ expression }} order by {{ order_by }}))[1]
{%- endmacro %}
{% macro spark__first_by(expression, order_by) -%}
    min_by({{ expression }}, {{ order_by }})
{%- endmacro %}

{#- How many elements of the array `array` are greater than `bound`. -#}
{% macro count_elements_greater(array, bound) -%}
    {{ return(adapter.dispatch('count_elements_greater', 'moovitamix')(array, bound)) }}
{%- endmacro %}
{% macro default__count_elements_greater(array, bound) -%}
    (
        select count(*)
        from unnest({{ array }}) as elements (element)
        where elements.element > {{ bound }}
    )
{%- endmacro %}
{% macro spark__count_elements_greater(array, bound) -%}
    size(filter({{ array }}, element -> element > {{ bound }}))
{%- endmacro %}

{#-
    A join clause that turns each row's `text` into one row per part split on the regular
    expression `pattern`: columns `<alias>.<value_column>` and `<alias>.<number_column>` (the
    part's place, increasing along the text).
-#}
{% macro split_to_rows(text, pattern, alias, value_column, number_column) -%}
    {{ return(adapter.dispatch('split_to_rows', 'moovitamix')(
        text, pattern, alias, value_column, number_column
    )) }}
{%- endmacro %}
{% macro default__split_to_rows(text, pattern, alias, value_column, number_column) -%}
    cross join lateral unnest(
        regexp_split_to_array({{ text }}, {{ pattern }})
    ) with ordinality as {{ alias }} ({{ value_column }}, {{ number_column }})
{%- endmacro %}
{% macro spark__split_to_rows(text, pattern, alias, value_column, number_column) -%}
    lateral view posexplode(split({{ text }}, {{ pattern }})) {{ alias }}
    as {{ number_column }}, {{ value_column }}
{%- endmacro %}
