// ipywidgets' controls typeset their labels through MathJax 2's API (MathJax.Hub.Queue) whenever
// a MathJax is on the page; the book loads MathJax 3 (Sphinx's), which has no Hub. This gives it
// the one call the widgets make, done with MathJax 3's typesetPromise. Loaded (deferred) right
// after MathJax, before any widget renders.
(function () {
  if (!window.MathJax || window.MathJax.Hub) { return; }
  window.MathJax.Hub = {
    Queue: function (job) {
      var element = Array.isArray(job) ? job[2] : undefined;
      if (window.MathJax.typesetPromise) {
        window.MathJax.typesetPromise(element ? [element] : undefined).catch(function () {});
      }
    }
  };
})();
