{#-
    The newest dlt load whose listen history elements a passing build already checked: what the
    latest successful transform step recorded in the run ledger (dbt_project/checked_loads.py).
    None, and every load is checked, when building in full (--full-refresh), on Spark, outside
    execution, without a ledger, or without a record in it.
-#}
{% macro elements_checked_through() -%}
    {%- if not execute or target.type != 'postgres' or flags.FULL_REFRESH -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set ledger = adapter.get_relation(
        database=target.database, schema='monitoring', identifier='pipeline_run_steps'
    ) -%}
    {%- if ledger is none -%}
        {{ return(none) }}
    {%- endif -%}
    {%- set result = run_query(
        "select details ->> 'elements_checked_through' from " ~ ledger
        ~ " where step = 'transform' and status = 'success'"
        ~ " order by finished_at desc nulls last limit 1"
    ) -%}
    {%- set values = result.columns[0].values() if result.columns else [] -%}
    {%- set value = values[0] if values else none -%}
    {%- if value is none or not is_load_id(value) -%}
        {{ return(none) }}
    {%- endif -%}
    {{ return(value | string) }}
{%- endmacro %}

{#- Whether `value` is a dlt load id (the load package's creation, in seconds), not hand-made. -#}
{% macro is_load_id(value) -%}
    {{ return(modules.re.fullmatch('[0-9]+([.][0-9]+)?', value | string) is not none) }}
{%- endmacro %}
