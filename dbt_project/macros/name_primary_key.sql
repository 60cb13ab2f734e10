{#-
    Post-hook (outside the transaction, after dbt dropped the table it replaced): name the
    table's primary key `pk_<table>`. dbt builds a table as `<table>__dbt_tmp` and swaps it in,
    so a name given in the contract would collide with the old table's index (index names are
    per schema) and Postgres' own would be `<table>__dbt_tmp_pkey`. Postgres only.
-#}
{% macro name_primary_key() -%}
    {%- if target.type != 'postgres' -%}
        {{ return('') }}
    {%- endif -%}
    do $name_primary_key$
    declare
        current_name text;
    begin
        select conname into current_name
        from pg_constraint
        where conrelid = '{{ this }}'::regclass and contype = 'p';
        if current_name is not null and current_name != 'pk_{{ this.identifier }}' then
            execute format(
                'alter table %s rename constraint %I to %I',
                '{{ this }}', current_name, 'pk_{{ this.identifier }}'
            );
        end if;
    end
    $name_primary_key$
{%- endmacro %}
