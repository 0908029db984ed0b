// Click a header of a table marked sortable (the leaderboard's) to sort by that column; again to
// reverse. Cells sort by their leading number where they have one ("16.6 (+1.5 [...])"), else as
// text; a cell without a number ("—") sorts last. Without JavaScript the table reads as it is.
document.addEventListener("DOMContentLoaded", () => {
  const marker = document.querySelector("[data-sortable-tables]");
  if (!marker) return;
  const key = (cell) => {
    const text = cell.textContent.trim();
    const number = parseFloat(text);
    return Number.isNaN(number) ? text.toLowerCase() : number;
  };
  for (const table of document.querySelectorAll("article table")) {
    const headers = table.querySelectorAll("thead th");
    headers.forEach((th, column) => {
      th.style.cursor = "pointer";
      th.title = "sort by this column";
      th.addEventListener("click", () => {
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        const descending = th.dataset.order !== "descending";
        headers.forEach((h) => delete h.dataset.order);
        th.dataset.order = descending ? "descending" : "ascending";
        th.setAttribute("aria-sort", th.dataset.order);
        rows.sort((a, b) => {
          const x = key(a.cells[column]), y = key(b.cells[column]);
          if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;  // ("—" last either way)
          const order = x < y ? -1 : x > y ? 1 : 0;
          return descending ? -order : order;
        });
        rows.forEach((row) => body.appendChild(row));
      });
    });
  }
});
