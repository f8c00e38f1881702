// Live lists of blocks. A table with data-events="URL" listens to the node's block feed
// (server-sent events) and puts a row on top for each new block, keeping at most
// data-rows-max rows; #chain-height and #tip-hash follow the newest block, and #live-status
// says whether the feed is connected. Text goes in with textContent, never as HTML.
"use strict";

(function () {
  const table = document.querySelector("table[data-events]");
  if (!table || !window.EventSource) {
    return;
  }
  const body = table.tBodies[0];
  const rowsMax = Number(table.dataset.rowsMax) || 20;
  const status = document.getElementById("live-status");

  function showStatus(text, state) {
    if (status) {
      status.textContent = text;
      status.dataset.state = state;
    }
  }

  function link(text, href) {
    const anchor = document.createElement("a");
    anchor.href = href;
    anchor.textContent = text;
    return anchor;
  }

  function cell(row, content, className) {
    const td = row.insertCell();
    if (typeof content === "string") {
      td.textContent = content;
    } else {
      td.appendChild(content);
    }
    if (className) {
      (typeof content === "string" ? td : content).className = className;
    }
  }

  function addBlock(block) {
    // A reorg sends heights again: the new block replaces what the table shows from there.
    for (const row of Array.from(body.rows)) {
      if (Number(row.dataset.height) >= block.height) {
        row.remove();
      }
    }
    const row = body.insertRow(0);
    row.dataset.height = String(block.height);
    row.className = "fresh";
    cell(row, link(String(block.height), "/blocks/" + block.height));
    cell(row, link(block.hash, "/blocks/" + block.hash), "hash");
    cell(row, block.time_text);
    cell(row, String(block.record_count));
    cell(row, String(block.failed_count));
    while (body.rows.length > rowsMax) {
      body.deleteRow(-1);
    }
    const height = document.getElementById("chain-height");
    const tip = document.getElementById("tip-hash");
    if (height && Number(height.textContent) <= block.height) {
      height.textContent = String(block.height);
      if (tip) {
        tip.textContent = block.hash;
        tip.href = "/blocks/" + block.hash;
      }
    }
  }

  const source = new EventSource(table.dataset.events);
  source.addEventListener("open", function () { showStatus("live", "live"); });
  source.addEventListener("error", function () { showStatus("reconnecting…", "waiting"); });
  source.addEventListener("block", function (event) { addBlock(JSON.parse(event.data)); });
})();
