{#-
    The columns and constraints of a contracted table's CREATE TABLE, without its primary and
    foreign keys: those are added after the rows are in, the primary key by `add_primary_key`
    (the first post-hook of every mart, in the model's transaction) and the foreign keys by
    `ensure_foreign_keys`. A key declared at creation is checked row by row as the rows are
    inserted (an index entry, a lookup per row); added afterwards, Postgres builds the index
    with one sort and checks a foreign key with one join (README: "Keys"). The keys are the
    same and still enforced for every later write; a build whose rows break one fails and
    rolls back.
-#}
{#-
    A contracted table on Postgres, created as `create table ... as select` rather than dbt's
    `create table (columns)` then `insert ... select`: Postgres plans an INSERT serially, a
    CREATE TABLE AS in parallel (max_parallel_workers_per_gather), which the largest marts'
    builds gain from. The contract holds as before: dbt checks the select's column names and
    types against it first (`get_assert_columns_equivalent`), every column is cast to its
    declared type in the declared order, and the not-null and named check constraints are
    added by the `add_contract_constraints` post-hook, in the model's transaction, before the
    keys (a row that breaks one fails the build, which rolls back). A post-hook and not a
    statement here: dbt reports the rows of the last statement it runs for the model, and that
    must stay the one that writes them. A model without that hook, or with a constraint it
    cannot add afterwards (a column-level key or check, an unnamed check), keeps dbt's own
    create-then-insert.
-#}
{% macro postgres__create_table_as(temporary, relation, sql) -%}
    {%- if temporary or not config.get('contract').enforced or not contract_added_after() -%}
        {{ return(dbt.postgres__create_table_as(temporary, relation, sql)) }}
    {%- endif -%}
    {%- set unlogged = config.get('unlogged', default=false) -%}
    {%- set sql_header = config.get('sql_header', none) -%}
    {{ sql_header if sql_header is not none }}
    {{ get_assert_columns_equivalent(sql) }}
    create {% if unlogged %}unlogged {% endif %}table {{ relation }} as (
        select
        {%- for column in model['columns'].values() %}
            {%- set column_name = adapter.quote(column['name']) if column.get('quote') else column['name'] %}
            cast(model_subq.{{ column_name }} as {{ column['data_type'] }}) as {{ column_name }}
            {{- "," if not loop.last }}
        {%- endfor %}
        from (
            {{ sql }}
        ) as model_subq
    )
{%- endmacro %}

{#-
    Whether the model's not-null and check constraints are left to `add_contract_constraints`:
    it is among the model's post-hooks, and it can add every one of them (column-level ones
    are not null only; model-level checks are named).
-#}
{% macro contract_added_after() -%}
    {%- set hooks = model['config'].get('post-hook', []) | map(attribute='sql') | join(' ') -%}
    {%- if 'add_contract_constraints' not in hooks -%}
        {{ return(false) }}
    {%- endif -%}
    {%- for column in model['columns'].values() -%}
        {%- for constraint in column.get('constraints', []) -%}
            {%- if constraint['type'] != 'not_null' -%}
                {{ return(false) }}
            {%- endif -%}
        {%- endfor -%}
    {%- endfor -%}
    {%- for constraint in model['constraints'] -%}
        {%- if constraint['type'] == 'check' and not constraint.get('name') -%}
            {{ return(false) }}
        {%- elif constraint['type'] not in ['check', 'primary_key', 'foreign_key'] -%}
            {{ return(false) }}
        {%- endif -%}
    {%- endfor -%}
    {{ return(true) }}
{%- endmacro %}

{#-
    Post-hook of the marts (before the keys): the contract's not-null and named check
    constraints that the table lacks, in one ALTER TABLE that validates them in one scan. A
    table created by `postgres__create_table_as` lacks them all; one that already has them (an
    incremental build, a table created by dbt's own DDL) gets nothing. Postgres only.
-#}
{% macro add_contract_constraints() -%}
    {%- if not execute or target.type != 'postgres' or not config.get('contract').enforced -%}
        {{ return('') }}
    {%- endif -%}
    {%- set not_null, checks = [], [] -%}
    {%- for kind, name in run_query(
        "select 'not_null', attname::text from pg_attribute where attrelid = '" ~ this
        ~ "'::regclass and attnum > 0 and attnotnull and not attisdropped"
        ~ " union all select 'check', conname::text from pg_constraint"
        ~ " where conrelid = '" ~ this ~ "'::regclass and contype = 'c'"
    ) -%}
        {%- do (not_null if kind == 'not_null' else checks).append(name) -%}
    {%- endfor -%}
    {%- set alterations = [] -%}
    {%- for column in model['columns'].values() -%}
        {%- set declared = column.get('constraints', []) | selectattr('type', 'equalto', 'not_null') -%}
        {%- if declared | list and column['name'] not in not_null -%}
            {%- set column_name = adapter.quote(column['name']) if column.get('quote') else column['name'] -%}
            {%- do alterations.append('alter column ' ~ column_name ~ ' set not null') -%}
        {%- endif -%}
    {%- endfor -%}
    {%- set missing = model['constraints'] | selectattr('type', 'equalto', 'check')
        | rejectattr('name', 'in', checks) | list -%}
    {%- for check in adapter.render_raw_model_constraints(raw_constraints=missing) -%}
        {%- do alterations.append('add ' ~ check) -%}
    {%- endfor -%}
    {%- if alterations -%}
        alter table {{ this }} {{ alterations | join(', ') }}
    {%- endif -%}
{%- endmacro %}

{% macro postgres__get_table_columns_and_constraints() -%}
    {%- set raw_column_constraints = adapter.render_raw_columns_constraints(
        raw_columns=model['columns']
    ) -%}
    {%- set raw_model_constraints = adapter.render_raw_model_constraints(
        raw_constraints=model['constraints']
            | rejectattr('type', 'in', ['foreign_key', 'primary_key']) | list
    ) -%}
    (
    {% for c in raw_column_constraints -%}
        {{ c }}{{ "," if not loop.last or raw_model_constraints }}
    {% endfor %}
    {% for c in raw_model_constraints -%}
        {{ c }}{{ "," if not loop.last }}
    {% endfor -%}
    )
{%- endmacro %}

{#-
    Post-hook (in the model's transaction, before the foreign keys that may refer to it): the
    contract's primary key, added once the rows are in, if the table has none yet (an
    incremental model keeps its key between builds). Its name is Postgres' own until
    `name_primary_key` renames it after the swap. Postgres only.
-#}
{% macro add_primary_key() -%}
    {%- if not execute or target.type != 'postgres' -%}
        {{ return('') }}
    {%- endif -%}
    {%- set keys = model['constraints'] | selectattr('type', 'equalto', 'primary_key') | list -%}
    {%- if not keys -%}
        {{ return('') }}
    {%- endif -%}
    do $add_primary_key$
    begin
        if not exists (
            select 1 from pg_constraint
            where conrelid = '{{ this }}'::regclass and contype = 'p'
        ) then
            alter table {{ this }} add primary key ({{ keys[0]['columns'] | join(', ') }});
        end if;
    end
    $add_primary_key$
{%- endmacro %}
