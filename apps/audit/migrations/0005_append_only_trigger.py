"""PostgreSQL: audit rows are append-only. UPDATE and DELETE of request records are refused
unless the transaction set ``odock.audit_retention`` (only the retention job does, to
remove whole sealed segments); checkpoints may only be marked purged by that job and are
never deleted. Other databases (the embedded SQLite) get no trigger."""

from django.db import migrations

FUNCTION = """
CREATE OR REPLACE FUNCTION odock_audit_append_only() RETURNS trigger AS $$
BEGIN
  IF current_setting('odock.audit_retention', true) = 'on' THEN
    IF TG_TABLE_NAME = 'audit_requestlog' AND TG_OP = 'DELETE' THEN
      RETURN OLD;
    END IF;
    IF TG_TABLE_NAME = 'audit_auditcheckpoint' AND TG_OP = 'UPDATE' THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'audit records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""
TRIGGERS = """
CREATE TRIGGER audit_requestlog_append_only BEFORE UPDATE OR DELETE ON audit_requestlog
  FOR EACH ROW EXECUTE FUNCTION odock_audit_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
  FOR EACH ROW EXECUTE FUNCTION odock_audit_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS audit_requestlog_append_only ON audit_requestlog;
DROP TRIGGER IF EXISTS audit_checkpoint_append_only ON audit_auditcheckpoint;
DROP FUNCTION IF EXISTS odock_audit_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTION, params=None)
        schema_editor.execute(TRIGGERS, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_audit_grade")]
    operations = [migrations.RunPython(forwards, backwards)]
