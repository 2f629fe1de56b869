#!/usr/bin/python
# qnprov: install a set of rendered files in one module call (issue 15).
"""Install a set of files, in order, each validated before it goes live.

A file's text is ``content`` (rendered by the action) or ``remote_src``, a file
already on the host (publishing a validated staging copy).

The controller side (plugins/action/qnprov_files.py) renders the templates and
passes their text here. For each file, in the order given:

- the same bytes already live: only owner, group and mode are enforced;
- otherwise the candidate is written to a private temp file, the file's
  ``validate`` command runs on it (``%s`` is the candidate; a non-zero exit
  stops here, before anything later in the list is touched, and nothing of the
  failing file goes live), then it replaces the live file atomically and its
  owner, group and mode are set.

So a list behaves as the same ``template`` tasks one after the other, each
checked against the files already live, in one module call instead of two or
three per file. In check mode nothing is written and nothing is validated (as
``template``). File texts are ``no_log`` parameters: they never reach the
module's invocation log or its result.
"""

from __future__ import annotations

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native

DOCUMENTATION = r"""
module: qnprov_files
short_description: Install rendered files in order, each validated before it goes live
description: Remote half of the qnprov_files action; see plugins/action/qnprov_files.py.
options:
  files:
    description: The files, in order.
    type: list
    elements: dict
    required: true
"""

FILE_SPEC = {
    "dest": {"type": "path", "required": True},
    "content": {"type": "str", "no_log": True},
    "remote_src": {"type": "path"},
    "owner": {"type": "str"},
    "group": {"type": "str"},
    "mode": {"type": "raw"},
    "validate": {"type": "str"},
    "want_before": {"type": "bool", "default": False},
}


def install(module: AnsibleModule, spec: dict, done: list) -> dict:
    dest = spec["dest"]
    b_dest = to_bytes(dest, errors="surrogate_or_strict")
    if (spec["content"] is None) == (spec["remote_src"] is None):
        module.fail_json(msg=f"{dest}: give exactly one of content and remote_src", results=done)
    if spec["remote_src"] is not None:
        # A file already on the host (a validated staging copy) is the candidate.
        with open(to_bytes(spec["remote_src"], errors="surrogate_or_strict"), "rb") as handle:
            b_content = handle.read()
    else:
        b_content = to_bytes(spec["content"], errors="surrogate_or_strict")
    result: dict = {"dest": dest, "changed": False, "content_changed": False}
    if os.path.isdir(b_dest):
        module.fail_json(msg=f"{dest} is a directory", results=done)
    if not os.path.isdir(os.path.dirname(b_dest)):
        module.fail_json(msg=f"Destination directory {os.path.dirname(dest)} does not exist", results=done)
    before = None
    if os.path.exists(b_dest):
        with open(b_dest, "rb") as handle:
            before = handle.read()
    if before != b_content:
        result["changed"] = result["content_changed"] = True
        if spec["want_before"]:
            result["before"] = "" if before is None else before.decode("utf-8", errors="replace")
            if spec["remote_src"] is not None:
                result["after"] = b_content.decode("utf-8", errors="replace")
        if not module.check_mode:
            fd, tmp = tempfile.mkstemp(prefix=".qnprov-", dir=module.tmpdir)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(b_content)
                if spec["validate"]:
                    if "%s" not in spec["validate"]:
                        module.fail_json(msg=f"validate must contain %s: {spec['validate']}", results=done)
                    rc, out, err = module.run_command(spec["validate"] % tmp)
                    if rc != 0:
                        module.fail_json(msg=f"failed to validate {dest}", dest=dest, results=done,
                                         exit_status=rc, stdout=out, stderr=err)
                module.atomic_move(tmp, dest, unsafe_writes=False)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    attrs = {"path": dest, "owner": spec["owner"], "group": spec["group"], "mode": spec["mode"],
             "secontext": [None, None, None], "attributes": None}
    # A file check mode did not write has no attributes to compare yet.
    if os.path.exists(b_dest) and module.set_fs_attributes_if_different(attrs, False):
        result["changed"] = True
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={"files": {"type": "list", "elements": "dict", "required": True, "options": FILE_SPEC}},
        supports_check_mode=True,
    )
    results = []
    for spec in module.params["files"]:
        try:
            results.append(install(module, spec, results))
        except OSError as exc:
            module.fail_json(msg=f"{spec['dest']}: {to_native(exc)}", results=results)
    module.exit_json(changed=any(r["changed"] for r in results), results=results)


if __name__ == "__main__":
    main()
