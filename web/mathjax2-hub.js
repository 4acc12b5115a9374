// The ipywidgets embed manager (@jupyter-widgets/base) typesets widget descriptions with
// MathJax 2's `MathJax.Hub.Queue(["Typeset", MathJax.Hub, element])`; the book loads MathJax 3,
// which has no Hub. This gives MathJax 3 that one call. MathJax (a deferred script) has
// replaced Sphinx's configuration object by DOMContentLoaded; widgets render on load, later.
document.addEventListener("DOMContentLoaded", () => {
  const mathjax = window.MathJax;
  if (!mathjax || !mathjax.startup || mathjax.Hub) return;
  mathjax.Hub = {
    Queue(...commands) {
      for (const [command, , element] of commands.filter(Array.isArray)) {
        if (command === "Typeset" && element) {
          mathjax.startup.promise = mathjax.startup.promise
            .then(() => mathjax.typesetPromise([element]))
            .catch(error => console.error("MathJax could not typeset a widget:", error));
        }
      }
    },
  };
});
