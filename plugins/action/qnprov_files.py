# qnprov: render a set of templates and install them in one module call (issue 15).
"""``qnprov_files``: the ``template`` action for a list of files, in one round trip.

Each ``template`` task costs two or three module calls on the host (stat, then
copy or file), even when nothing changes. This action renders every template
on the controller, as ``template`` does (role ``templates/`` search path, the
task's variables plus the file's own ``vars``), then sends them to the
``qnprov_files`` module in one call. The module installs them in the order
given, each validated by its ``validate`` command before it goes live (see
plugins/modules/qnprov_files.py).

Task arguments::

    qnprov_files:
      owner: root          # defaults for every file
      group: root
      mode: "0644"
      validate: ...        # optional default; ``%s`` is the candidate file
      files:
        - src: x.conf.j2   # a template, or ``content:`` (text given as is),
                           # or ``remote_src:`` (a file on the host, e.g. a checked staging copy)
          dest: /etc/x.conf
          vars: {}         # variables for this file's template only
          validate: ...    # overrides the default
          diff: false      # never show this file's text in --diff output
          owner/group/mode # override the defaults

The result names each file with ``changed``; ``--diff`` shows a diff per changed
file whose ``diff`` is not false. File texts never appear in the result
otherwise (the module's invocation is dropped; its ``content`` is no_log).
"""

from __future__ import annotations

import os
from typing import Any

from ansible._internal._templating import _template_vars
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase
from ansible.template import trust_as_template

DEFAULT_KEYS = ("owner", "group", "mode", "validate")
FILE_KEYS = {"src", "content", "remote_src", "dest", "vars", "validate", "diff", "owner", "group", "mode"}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset({"files", *DEFAULT_KEYS})

    def _render(self, src: str, dest: str, extra: dict[str, Any], task_vars: dict[str, Any]) -> str:
        try:
            source = self._find_needle("templates", src)
        except AnsibleError as exc:
            raise AnsibleActionFail(to_text(exc)) from exc
        data = trust_as_template(self._loader.get_text_file_contents(source))
        searchpath = list(task_vars.get("ansible_search_path", []))
        searchpath.extend([self._loader._basedir, os.path.dirname(source)])
        paths: list[str] = []
        for path in searchpath:
            paths += [os.path.join(path, "templates"), path]
        variables = task_vars.copy()
        variables.update(extra)
        variables.update(_template_vars.generate_ansible_template_vars(
            path=src, fullpath=source, dest_path=dest,
            include_ansible_managed="ansible_managed" not in variables))
        templar = self._templar.copy_with_new_env(searchpath=paths, available_variables=variables)
        # The template action's defaults: trim_blocks on, lstrip_blocks off, "\n".
        rendered = templar.template(data, escape_backslashes=False,
                                    overrides={"trim_blocks": True, "lstrip_blocks": False, "newline_sequence": "\n"})
        return "" if rendered is None else to_text(rendered)

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        files = args.get("files")
        if not isinstance(files, list) or not files:
            raise AnsibleActionFail("files must be a non-empty list")
        defaults = {key: args.get(key) for key in DEFAULT_KEYS}
        want_diff = bool(self._task.diff)
        specs: list[dict[str, Any]] = []
        texts: list[str | None] = []
        show: list[bool] = []
        for entry in files:
            if not isinstance(entry, dict) or "dest" not in entry:
                raise AnsibleActionFail(f"each file needs a dest: {entry!r}")
            unknown = set(entry) - FILE_KEYS
            if unknown:
                raise AnsibleActionFail(f"{entry['dest']}: unknown keys {sorted(unknown)}")
            if sum(key in entry for key in ("src", "content", "remote_src")) != 1:
                raise AnsibleActionFail(f"{entry['dest']}: give exactly one of src, content and remote_src")
            dest = str(entry["dest"])
            text: str | None = None
            if "src" in entry:
                text = self._render(str(entry["src"]), dest, dict(entry.get("vars") or {}), task_vars)
            elif "content" in entry:
                text = to_text(entry["content"])
            diff_ok = boolean(entry.get("diff", True), strict=True)
            spec = {key: entry.get(key, defaults.get(key)) for key in ("owner", "group", "mode", "validate")}
            spec.update(dest=dest, content=text, want_before=want_diff and diff_ok)
            if text is None:
                spec["remote_src"] = str(entry["remote_src"])
            specs.append(spec)
            texts.append(text)
            show.append(diff_ok)
        try:
            module = self._execute_module(module_name="qnprov_files", module_args={"files": specs},
                                          task_vars=task_vars)
        finally:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        module.pop("invocation", None)
        done = module.get("results") or []
        diffs = []
        for spec, text, diff_ok, res in zip(specs, texts, show, done, strict=False):
            if want_diff and diff_ok and res.get("content_changed"):
                diffs.append({"before_header": spec["dest"], "after_header": spec["dest"],
                              "before": res.pop("before", ""),
                              "after": res.pop("after", "") if text is None else text})
            res.pop("before", None)
            res.pop("after", None)
        result.update(module)
        result["results"] = done
        if diffs:
            result["diff"] = diffs
        return result
