set terminal pngcairo size 900,560 enhanced font 'Sans,11'
set output 'results/entropy_vs_fluctuation_load_row3.png.tmp.20991'
$m << EOD
0.154541 0.0914917 0.117249 0.117432 0.157471 0.09198 0.135193 0.134644
0.145447 0.134827 0.111511 0.135376 0.125183 0.128967 0.113159 0.10553
EOD
set title "Similarity-Aware SMoE (paper's literal τ/σ): load (last\nepoch, first seed)"
set xlabel "expert"
set ylabel "MoE layer"
set grid
set key outside right top
unset grid
set palette rgb 33,13,10
set cblabel 'share of routed pairs'
set xtics 1
set ytics 1
plot $m matrix with image notitle
