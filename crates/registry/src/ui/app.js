// regctl web UI: progressive enhancement only. Pages work without this script.
"use strict";
document.documentElement.classList.add("js");

document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const text = button.getAttribute("data-copy") || "";
  const done = () => {
    button.textContent = "Copied";
    button.classList.add("done");
    setTimeout(() => { button.textContent = "Copy"; button.classList.remove("done"); }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => select(button));
  } else {
    select(button);
  }
});

// Without clipboard access (plain HTTP), select the command so Ctrl+C copies it.
function select(button) {
  const code = button.parentElement.querySelector("code");
  if (!code) return;
  const range = document.createRange();
  range.selectNodeContents(code);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

// Live filtering of the repository list as you type (the form still searches on submit).
const filter = document.getElementById("filter");
const table = document.getElementById("repositories");
if (filter && table) {
  const rows = Array.from(table.querySelectorAll("tbody tr"));
  const none = document.getElementById("no-match");
  filter.addEventListener("input", () => {
    const query = filter.value.trim().toLowerCase();
    let shown = 0;
    for (const row of rows) {
      const match = (row.getAttribute("data-name") || "").includes(query);
      row.classList.toggle("hidden", !match);
      if (match) shown++;
    }
    if (none) none.classList.toggle("hidden", shown > 0);
  });
}
