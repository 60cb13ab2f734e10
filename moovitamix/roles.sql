-- The warehouse's least-privilege roles, its schemas and their grants (see SECURITY.md).
-- Idempotent: moovitamix.roles.ensure_roles applies it in one transaction each time the
-- warehouse is opened, as the warehouse user, which needs CREATEROLE (or the roles granted WITH
-- ADMIN OPTION) and must own the schemas. Changes are reported as NOTICEs.
--
-- Six NOLOGIN group roles. A pipeline step runs as its role; a person logs in as a member of one.
--   mvx_loader       writes raw (and dlt's raw_staging); rows in monitoring
--   mvx_transformer  reads raw and the published lists; writes staging, marts, marts_candidate;
--                    rows in monitoring
--   mvx_ml           reads the non-PII marts; writes ml, recommendations; rows in monitoring
--   mvx_analyst      reads the non-PII marts and monitoring; writes and creates nothing
--   mvx_app          reads recommendations (and fct_listens, for fold-in); logs impressions
--   mvx_pii_reader   what mvx_analyst reads, plus the PII marts (named *_pii)
--   mvx_publisher    owns the schemas marts and marts_candidate: swaps them (the publish) and
--                    the staged lists (a member of mvx_ml); records the run in monitoring
--   mvx_privacy      erases a user on request: reads and deletes their rows wherever they are
-- Each has LOGIN members (moovitamix/logins.py): the steps' own logins and people's.

-- one run of this file at a time per database ("mvx_rol")
select pg_advisory_xact_lock(30811031830949740);

-- The roles, and who may use them: the warehouse user may SET each one (it is made a member
-- when it may grant roles; otherwise a DBA grants them once, see SECURITY.md).
do $$
declare
    role record;
    missing text[];
    may_grant boolean;
begin
    for role in
        select * from (values
            ('mvx_loader', 'writes raw and monitoring rows (the ingestion step)'),
            ('mvx_transformer', 'reads raw; writes staging, marts, marts_candidate (dbt)'),
            ('mvx_ml', 'reads the non-PII marts; writes ml and recommendations'),
            ('mvx_analyst', 'reads the non-PII marts and monitoring; writes nothing'),
            ('mvx_app', 'reads recommendations only (the app)'),
            ('mvx_pii_reader', 'mvx_analyst plus the PII marts'),
            ('mvx_publisher', 'owns the marts schemas; publishes a run (swaps them, the lists)'),
            ('mvx_privacy', 'erases users on request (privacy/); no other writes')
        ) as r (name, purpose)
    loop
        if not exists (select from pg_roles where rolname = role.name) then
            execute format(
                'create role %I nologin nosuperuser nocreatedb nocreaterole noreplication '
                'nobypassrls', role.name
            );
            execute format('comment on role %I is %L', role.name, 'MooVitamix: ' || role.purpose);
            raise notice 'created role %', role.name;
        end if;
        if exists (
            select from pg_roles where rolname = role.name and (rolsuper or rolbypassrls)
        ) then
            raise warning 'role % is a superuser or bypasses RLS: its grants restrict nothing',
                role.name;
        end if;
    end loop;

    -- mvx_pii_reader inherits what mvx_analyst may read
    if not pg_has_role('mvx_pii_reader', 'mvx_analyst', 'member') then
        grant mvx_analyst to mvx_pii_reader;
        raise notice 'granted mvx_analyst to mvx_pii_reader';
    end if;
    -- the publish replaces mvx_ml's lists, which takes their owner's privileges
    if not pg_has_role('mvx_publisher', 'mvx_ml', 'member') then
        grant mvx_ml to mvx_publisher;
        raise notice 'granted mvx_ml to mvx_publisher';
    end if;

    select array_agg(r.rolname order by r.rolname) into missing
    from pg_roles r
    where r.rolname in (
        'mvx_loader', 'mvx_transformer', 'mvx_ml', 'mvx_analyst', 'mvx_app', 'mvx_pii_reader',
        'mvx_publisher', 'mvx_privacy'
    )
    and not exists (
        select from pg_auth_members m
        where m.roleid = r.oid and m.member = (select oid from pg_roles where rolname = session_user)
    );
    select rolsuper or rolcreaterole into may_grant from pg_roles where rolname = session_user;
    if missing is not null and not may_grant then
        raise exception 'warehouse user % is not a member of % and may not grant roles (no '
            'CREATEROLE): a DBA must run  GRANT % TO % WITH ADMIN OPTION  (see SECURITY.md)',
            session_user, array_to_string(missing, ', '), array_to_string(missing, ', '),
            session_user;
    end if;
    for i in 1 .. coalesce(array_length(missing, 1), 0) loop
        execute format('grant %I to %I', missing[i], session_user);
        raise notice 'granted % to %', missing[i], session_user;
    end loop;
end $$;

-- Postgres 15+ already gives PUBLIC no CREATE on `public`; older servers do (CVE-2018-1058).
do $$
begin
    if exists (select from pg_namespace where nspname = 'public') then
        revoke create on schema public from public;
    end if;
end $$;

create schema if not exists raw;
create schema if not exists raw_staging;  -- dlt's merge staging dataset
create schema if not exists staging;
create schema if not exists marts;
create schema if not exists marts_candidate;  -- the marts of a run until it publishes them
create schema if not exists recommendations;
create schema if not exists ml;
create schema if not exists monitoring;
create schema if not exists privacy;  -- the suppression list and its salt (privacy/)

-- The publish renames the marts schemas, which takes their owner and CREATE on the database:
-- both go to mvx_publisher, so no superuser publishes. (A warning, not an error, if the
-- warehouse user may not grant CREATE on the database: a DBA then grants it, see SECURITY.md.)
do $$
declare
    schema text;
begin
    if not has_database_privilege('mvx_publisher', current_database(), 'create') then
        execute format('grant create on database %I to mvx_publisher', current_database());
    end if;
    foreach schema in array array['marts', 'marts_candidate'] loop
        if (select pg_get_userbyid(nspowner) from pg_namespace where nspname = schema)
            <> 'mvx_publisher' then
            execute format('alter schema %I owner to mvx_publisher', schema);
            raise notice 'schema % now owned by mvx_publisher', schema;
        end if;
    end loop;
end $$;

-- Relations made before the roles (or by hand) go to the role that writes their schema: its
-- step must be able to replace them. A serial's sequence follows its table.
do $$
declare
    rel record;
begin
    for rel in
        select n.nspname, c.relname, pg_get_userbyid(c.relowner) as old_owner, o.owner,
            case c.relkind
                when 'v' then 'view' when 'm' then 'materialized view'
                when 'S' then 'sequence' when 'f' then 'foreign table' else 'table'
            end as kind
        from (values
            ('raw', 'mvx_loader'), ('raw_staging', 'mvx_loader'),
            ('staging', 'mvx_transformer'), ('marts', 'mvx_transformer'),
            ('marts_candidate', 'mvx_transformer'), ('recommendations', 'mvx_ml'),
            ('ml', 'mvx_ml'), ('monitoring', 'mvx_loader')
        ) as o (schema, owner)
        join pg_namespace n on n.nspname = o.schema
        join pg_class c on c.relnamespace = n.oid
        where c.relkind in ('r', 'p', 'f', 'v', 'm', 'S')
            and pg_get_userbyid(c.relowner) <> o.owner
            and not (c.relkind = 'S' and exists (
                select from pg_depend d
                where d.classid = 'pg_class'::regclass and d.objid = c.oid
                    and d.deptype in ('a', 'i')
            ))
        order by n.nspname, c.relkind desc, c.relname
    loop
        execute format('alter %s %I.%I owner to %I', rel.kind, rel.nspname, rel.relname, rel.owner);
        raise notice 'adopted %.%: % -> %', rel.nspname, rel.relname, rel.old_owner, rel.owner;
    end loop;
end $$;

-- raw: dlt's, as mvx_loader; dbt reads it and, on Postgres 17+, analyzes its sources.
grant usage, create on schema raw, raw_staging to mvx_loader;
grant usage on schema raw to mvx_transformer;
alter default privileges for role mvx_loader in schema raw
grant select on tables to mvx_transformer;
grant select on all tables in schema raw to mvx_transformer;
do $$
begin
    if current_setting('server_version_num')::int >= 170000 then
        execute 'alter default privileges for role mvx_loader in schema raw '
            'grant maintain on tables to mvx_transformer';
        execute 'grant maintain on all tables in schema raw to mvx_transformer';
    end if;
end $$;

-- staging and the marts: dbt's, as mvx_transformer. `marts` and `marts_candidate` get the same
-- grants: the publish renames one to the other, and a schema's grants move with it.
grant usage, create on schema staging, marts, marts_candidate to mvx_transformer;
grant usage on schema marts, marts_candidate to mvx_ml, mvx_analyst;
-- serving/ folds a user's listens into the model: dbt grants it `fct_listens` alone
grant usage on schema marts, marts_candidate to mvx_app;

-- The marts' readers come from dbt's `grants` config, applied on every build: no default
-- privileges here, so a table made there by anything else is readable by nobody (fail closed).
-- Marts that exist already get what dbt would give them; a PII mart loses any stray grant.
do $$
declare
    mart record;
begin
    for mart in
        select n.nspname, c.relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('marts', 'marts_candidate') and c.relkind in ('r', 'p', 'f', 'v', 'm')
    loop
        if mart.relname like '%\_pii' then
            execute format(
                'revoke all on %I.%I from public, mvx_analyst, mvx_app, mvx_ml',
                mart.nspname, mart.relname
            );
            execute format('grant select on %I.%I to mvx_pii_reader', mart.nspname, mart.relname);
        else
            execute format(
                'grant select on %I.%I to mvx_analyst, mvx_ml', mart.nspname, mart.relname
            );
        end if;
    end loop;
end $$;

-- ml and recommendations: the ML step's, as mvx_ml; the app reads the published lists, and so
-- does dbt, which keeps a copy of each run's (the uptake mart's history).
grant usage, create on schema ml, recommendations to mvx_ml;
grant usage on schema recommendations to mvx_app, mvx_transformer;
alter default privileges for role mvx_ml in schema recommendations
grant select on tables to mvx_app, mvx_transformer;
grant select on all tables in schema recommendations to mvx_app, mvx_transformer;

-- monitoring: every step records its rows here (`create table if not exists` needs CREATE even
-- when the table exists, hence the creators), mvx_publisher the run ledger; analysts read it
-- all.
grant usage, create on schema monitoring to mvx_loader, mvx_transformer, mvx_ml, mvx_publisher;
grant usage on schema monitoring to mvx_analyst;
alter default privileges for role mvx_loader, mvx_transformer, mvx_ml, mvx_publisher, current_user
in schema monitoring
grant select, insert, update, delete on tables
to mvx_loader, mvx_transformer, mvx_ml, mvx_publisher;
alter default privileges for role mvx_loader, mvx_transformer, mvx_ml, mvx_publisher, current_user
in schema monitoring
grant usage, select on sequences to mvx_loader, mvx_transformer, mvx_ml, mvx_publisher;
alter default privileges for role mvx_loader, mvx_transformer, mvx_ml, mvx_publisher, current_user
in schema monitoring
grant select on tables to mvx_analyst;
grant select, insert, update, delete on all tables in schema monitoring
to mvx_loader, mvx_transformer, mvx_ml, mvx_publisher;
grant usage, select on all sequences in schema monitoring
to mvx_loader, mvx_transformer, mvx_ml, mvx_publisher;
grant select on all tables in schema monitoring to mvx_analyst;

-- serving/'s log of every list it serves (batched inserts as mvx_app); dbt's uptake mart
-- (fct_recommendation_uptake) reads it as mvx_transformer. The app may insert, not read.
-- Created as mvx_loader, the owner of monitoring's tables (nothing to adopt on the next run).
set local role mvx_loader;
create table if not exists monitoring.recommendation_impressions (
    served_at timestamptz not null default now(),
    user_id bigint,
    track_id bigint,  -- the seed track of a play-next list
    model_run_id text,
    source text not null check (source in ('model', 'fallback', 'fold_in')),
    route text not null,
    k integer not null,
    track_ids bigint [] not null
);
create index if not exists recommendation_impressions_served_at_idx
on monitoring.recommendation_impressions (served_at);
comment on table monitoring.recommendation_impressions is
'Every list the serving API returned: when, to whom (user_id, or track_id for play-next), '
'which model run, source (model, fallback, fold_in), route, k and the tracks in rank order.';
reset role;
grant usage on schema monitoring to mvx_app;
grant insert on monitoring.recommendation_impressions to mvx_app;
grant select on monitoring.recommendation_impressions to mvx_transformer;

-- Erasure (privacy/, SECURITY.md "Forgetting a user"). mvx_privacy reads and deletes the rows of
-- the stores that hold users: raw and dlt's staging (mvx_loader's), staging's copy of the
-- published lists (mvx_transformer's), the lists (mvx_ml's), the impressions. The marts get it
-- from dbt's `grants` config (dbt_project.yml), re-applied on every build.
grant usage on schema raw, raw_staging, staging, marts, marts_candidate, recommendations, ml,
monitoring to mvx_privacy;
alter default privileges for role mvx_loader in schema raw, raw_staging
grant select, delete on tables to mvx_privacy;
grant select, delete on all tables in schema raw, raw_staging to mvx_privacy;
alter default privileges for role mvx_transformer in schema staging
grant select, delete on tables to mvx_privacy;
grant select, delete on all tables in schema staging to mvx_privacy;
alter default privileges for role mvx_ml in schema recommendations
grant select, delete on tables to mvx_privacy;
grant select, delete on all tables in schema recommendations to mvx_privacy;
grant select, delete on monitoring.recommendation_impressions to mvx_privacy;

-- The suppression list: salted hashes of erased users' ids and e-mails, never plain values;
-- the salt is made once per warehouse. Read by ingestion (it drops them) and validation (no
-- table may hold them); only mvx_privacy adds to it. Analysts and the app see none of it.
create table if not exists privacy.salt (
    singleton boolean primary key default true check (singleton),
    salt bytea not null
);
insert into privacy.salt (salt)
select uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid())
where not exists (select from privacy.salt);
create table if not exists privacy.suppressions (
    subject_hash text primary key,  -- sha256(salt || 'user_id:<id>' or 'email:<e-mail>'), hex
    kind text not null check (kind in ('user_id', 'email')),
    request_id bigint not null,
    suppressed_at timestamptz not null default now()
);
revoke all on schema privacy from public;
grant usage on schema privacy to mvx_privacy, mvx_loader, mvx_transformer;
grant select on privacy.salt, privacy.suppressions to mvx_privacy, mvx_loader, mvx_transformer;
grant insert on privacy.suppressions to mvx_privacy;

-- Requests: an operator inserts (user_id, reason); the next daily run or `make forget-user`
-- processes them. Each store erased is a row of erasure_steps, written in the store's own
-- transaction (a killed erasure resumes where it stopped); the audit is their sum, no PII.
-- Created as mvx_loader, the owner of monitoring's tables (nothing to adopt on the next run).
set local role mvx_loader;
create table if not exists monitoring.erasure_requests (
    request_id bigserial primary key,
    user_id bigint,  -- cleared once the request is done: the audit keeps the hash only
    subject_hash text,
    reason text not null default '',
    requested_at timestamptz not null default now(),
    requested_by text not null default current_user,
    status text not null default 'pending' check (status in ('pending', 'running', 'done')),
    started_at timestamptz,
    finished_at timestamptz,
    check (user_id is not null or status = 'done')
);
create table if not exists monitoring.erasure_steps (
    request_id bigint not null references monitoring.erasure_requests,
    store text not null,  -- a table (schema.table) or a store outside Postgres (artifacts, lake)
    removed bigint not null,
    done_at timestamptz not null default now(),
    done_by text not null default current_user,  -- the role that erased
    primary key (request_id, store)
);
create or replace view monitoring.erasure_audit as
select r.request_id, r.subject_hash, r.reason, r.requested_at, r.started_at, r.finished_at,
    r.status, coalesce(sum(s.removed), 0) as removed,
    coalesce(jsonb_object_agg(s.store, s.removed) filter (where s.store is not null), '{}')
        as removed_by_store,
    coalesce(string_agg(distinct s.done_by, ', '), '') as erased_by
from monitoring.erasure_requests as r
left join monitoring.erasure_steps as s on s.request_id = r.request_id
group by r.request_id;
comment on view monitoring.erasure_audit is
'One row per erasure request: hashed subject, when, rows removed per store, by which role.';
reset role;
revoke all on monitoring.erasure_requests, monitoring.erasure_steps
from mvx_transformer, mvx_ml, mvx_analyst;
revoke all on monitoring.erasure_audit from mvx_transformer, mvx_ml;
grant select, insert, update on monitoring.erasure_requests to mvx_privacy;
grant select, insert on monitoring.erasure_steps to mvx_privacy;
grant usage on sequence monitoring.erasure_requests_request_id_seq to mvx_privacy;
grant select on monitoring.erasure_audit to mvx_privacy, mvx_analyst;
